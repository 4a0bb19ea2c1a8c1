"""The Python package (``pip install .``): scan, the safe loader, signatures, the guard.

Checked against the real libraries: ``ckptguard.load`` must return what
``torch.load(weights_only=False)`` returns for every benign fixture (same types, dtypes, shapes,
strides, storage sharing, bits), ``ckptguard.scan`` must agree with the fixture manifests and
with the CLI's JSON, and every malicious fixture must be refused by ``ckptguard.load`` in a child
process (cwd = a fresh temp dir) that never sees its payload's ``ckptguard_pwned``.
Lightning / litdata paths and resuming training are in ``test_lightning.py``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pathlib
import pickle
import subprocess
import sys
import threading

import pytest

import ckptguard

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

REPO = pathlib.Path(__file__).resolve().parents[2]
MARKER = "ckptguard_pwned"
BIN = pathlib.Path(os.environ.get("CKPTGUARD_BIN",
                                  REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "ckptguard"))
PICKLES = json.loads((REPO / "fixtures/pickle/manifest.json").read_text())
CONTAINERS = json.loads((REPO / "fixtures/containers/manifest.json").read_text())
LOADS = json.loads((REPO / "fixtures/load/manifest.json").read_text())

pytestmark = pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")


def fx(rel: str) -> pathlib.Path:
    return REPO / rel


# ---------------------------------------------------------------------------------------------
# comparing a loaded object with torch.load's
# ---------------------------------------------------------------------------------------------

# What the safe loader (crates/load) cannot yet represent: (what torch.load gives, what we give).
KNOWN_DEVIATIONS = {
    "pathlib path -> str",          # Value has no path variant
    "torch.Size -> tuple",          # Value has no Size variant
    "numpy scalar -> Python scalar",  # numpy scalars become int/float/bool/complex
    "OrderedDict._metadata dropped",  # state_dict version metadata is not kept
}


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t


def same(ours, ref, path: str = "", devs: list | None = None) -> list:
    """Asserts that `ours` equals torch.load's `ref`; returns the known deviations met."""
    devs = [] if devs is None else devs
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and type(ours) is type(ref), (path, type(ours), type(ref))
        assert (ours.dtype, ours.shape, ours.stride(), ours.storage_offset()) == \
               (ref.dtype, ref.shape, ref.stride(), ref.storage_offset()), path
        assert ours.requires_grad == ref.requires_grad, path
        assert (ours.is_conj(), ours.is_neg()) == (ref.is_conj(), ref.is_neg()), path
        assert ours.device == ref.device, path
        assert torch.equal(_bits(ours), _bits(ref)), path
        return devs
    if isinstance(ref, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == ref.dtype and ours.shape == ref.shape, path
        assert ours.tobytes() == ref.tobytes(), path
        return devs
    if isinstance(ref, pathlib.PurePath) and ours == str(ref):
        devs.append((path, "pathlib path -> str"))
        return devs
    if type(ours) is type(ref) and isinstance(ref, (np.generic, pathlib.PurePath)):
        assert ours == ref, (path, ours, ref)
        return devs
    if isinstance(ref, np.generic):
        assert type(ours) is type(ref.item()) and ours == ref.item(), (path, ours, ref)
        devs.append((path, "numpy scalar -> Python scalar"))
        return devs
    if isinstance(ref, torch.Size):
        assert tuple(ours) == tuple(ref), path
        if type(ours) is not torch.Size:
            devs.append((path, "torch.Size -> tuple"))
        return devs
    if isinstance(ref, dict):
        assert type(ours) is type(ref), (path, type(ours), type(ref))
        assert list(ours) == list(ref), (path, list(ours), list(ref))
        for k in ref:
            same(ours[k], ref[k], f"{path}.{k}", devs)
        if getattr(ref, "_metadata", None) is not None and getattr(ours, "_metadata", None) is None:
            devs.append((path, "OrderedDict._metadata dropped"))
        return devs
    if isinstance(ref, argparse.Namespace):
        assert type(ours) is argparse.Namespace, path
        return same(vars(ours), vars(ref), path, devs)
    if isinstance(ref, (list, tuple)):
        assert type(ours) is type(ref) and len(ours) == len(ref), (path, type(ours), type(ref))
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            same(a, b, f"{path}.{i}", devs)
        return devs
    if isinstance(ref, float) and math.isnan(ref):
        assert isinstance(ours, float) and math.isnan(ours), path
        return devs
    assert type(ours) is type(ref) and ours == ref, (path, ours, ref)
    return devs


def storage_groups(obj) -> list[list[str]]:
    """Tensors grouped by the storage they share, by path (the sharing structure)."""
    groups: dict[int, list[str]] = collections.defaultdict(list)

    def walk(x, p):
        if isinstance(x, torch.Tensor):
            groups[x.untyped_storage().data_ptr()].append(p)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{p}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{p}.{i}")

    walk(obj, "")
    return sorted(sorted(g) for g in groups.values() if len(g) > 1 or g)


def benign_torch_files() -> list[tuple[str, pathlib.Path]]:
    out = [(e["path"], fx(e.get("reference", e["path"]))) for e in LOADS
           if e["expect"] in ("convert", "inspect_only")]
    out += [(e["path"], fx(e["path"])) for e in CONTAINERS
            if e["expect"] == "safe" and e["kind"] in ("torch_zip", "legacy", "lightning_ckpt", "fabric_ckpt")]
    return out


# ---------------------------------------------------------------------------------------------
# the package itself
# ---------------------------------------------------------------------------------------------

def test_import_needs_no_torch():
    code = ("import sys, ckptguard; r = ckptguard.scan(sys.argv[1]); "
            "assert r.verdict == 'unsafe', r; assert 'torch' not in sys.modules; "
            "assert 'numpy' not in sys.modules; print(ckptguard.__version__)")
    p = subprocess.run([sys.executable, "-c", code, str(fx("fixtures/containers/torch_zip/mal_data_pkl.pt"))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ckptguard.__version__


def test_public_api_is_typed():
    pkg = pathlib.Path(ckptguard.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_native.pyi").exists()
    for name in ckptguard.__all__:
        assert hasattr(ckptguard, name), name


# ---------------------------------------------------------------------------------------------
# scan
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pickle", "containers"])
def test_scan_agrees_with_the_manifests(kind):
    entries = PICKLES if kind == "pickle" else CONTAINERS
    wrong = []
    for e in entries:
        r = ckptguard.scan(fx(e["path"]))
        # a directory container's first row is the container itself
        verdict = r.files[0].verdict if fx(e["path"]).is_dir() else r.verdict
        if verdict != e["expect"]:
            wrong.append((e["path"], verdict, e["expect"]))
    assert not wrong, wrong[:10]


def test_scan_report_is_the_cli_json():
    if not BIN.exists():
        pytest.skip(f"no CLI binary at {BIN}")
    paths = ["fixtures/containers/torch_zip/mal_data_pkl.pt", "fixtures/containers/lightning/trainer_fit.ckpt",
             "fixtures/containers/dcp/mal_relative_path", "fixtures/containers/litdata/mal_zstd_chunk",
             "fixtures/containers/deepspeed/mal_latest_traversal/model.ckpt"]
    for rel in paths:
        cli = subprocess.run([str(BIN), "scan", "--format", "json", rel], capture_output=True, text=True, cwd=REPO)
        assert cli.returncode in (0, 1), cli.stderr
        ours = ckptguard.scan(rel)
        assert ours.to_dict() == json.loads(cli.stdout), rel
        assert ours.exit_code == cli.returncode


def test_scan_bytes_and_file_objects():
    evil = pickle.dumps(0)[:2] + b"cposix\nsystem\nX\x04\x00\x00\x00true\x85R."
    r = ckptguard.scan(evil)
    assert r.verdict == "unsafe" and not r.safe
    (f,) = r.failing_findings
    assert (f.code, f.name, f.severity, f.global_, f.call) == \
        ("CG101", "dangerous-call", "critical", "posix.system", 'posix.system("true")')
    assert str(f).startswith("critical CG101 dangerous-call")
    buf = io.BytesIO(b"junk" + evil)
    buf.seek(4)
    assert ckptguard.scan(buf, name="x.pkl").verdict == "unsafe"
    assert buf.tell() == 4, "scan must leave the stream where it was"
    assert ckptguard.scan(bytearray(pickle.dumps({"a": [1, 2]}))).safe
    assert ckptguard.scan(memoryview(pickle.dumps((1, "x")))).verdict == "safe"
    with open(fx("fixtures/containers/lightning/trainer_fit.ckpt"), "rb") as fh:
        r = ckptguard.scan(fh)
    assert r.safe and r.files[0].format == "torch-zip" and r.files[0].path.endswith("trainer_fit.ckpt")
    assert ckptguard.scan(b"definitely not a pickle").verdict == "skipped"
    assert ckptguard.scan(b"definitely not a pickle", name="model.pkl").verdict == "unsafe"


def test_scan_directories_and_several_paths():
    r = ckptguard.scan(fx("fixtures/containers/dcp"))
    rows = {pathlib.Path(f.path).relative_to(REPO / "fixtures/containers/dcp").as_posix(): f for f in r.files}
    assert rows["benign_plain"].verdict == "safe" and rows["benign_plain"].format == "dcp-dir"
    assert rows["mal_metadata"].verdict == "unsafe"
    assert any(f.code == "CG402" for f in rows["mal_relative_path"].findings)  # path escape
    assert r.verdict == "unsafe" and r.summary.unsafe >= 4
    both = ckptguard.scan([fx("fixtures/containers/lightning/trainer_fit.ckpt"),
                           fx("fixtures/containers/numpy/benign_arrays.npz")])
    assert both.safe and both.summary.files == 2
    with pytest.raises(FileNotFoundError):
        ckptguard.scan(REPO / "no" / "such" / "file.pt")


def test_config_allow_and_fail_on(tmp_path):
    import ipaddress

    data = pickle.dumps(ipaddress.ip_address("10.0.0.1"))  # not on the allowlist: high
    r = ckptguard.scan(data)
    assert r.verdict == "unsafe" and r.failing_findings[0].global_ == "ipaddress.IPv4Address"
    assert ckptguard.scan(data, allow=["ipaddress.IPv4Address"]).safe
    assert ckptguard.scan(data, fail_on="critical").safe
    cfg = tmp_path / "ckptguard.toml"
    cfg.write_text('[allow]\nglobals = ["ipaddress:IPv4Address"]\n')
    assert ckptguard.scan(data, config=cfg).safe
    c = ckptguard.Config(str(cfg), fail_on="critical")
    assert c.fail_on == "critical" and ckptguard.scan(data, config=c).safe
    # A ckptguard.toml next to the input is never picked up implicitly.
    (tmp_path / "d.pkl").write_bytes(data)
    assert ckptguard.scan(tmp_path / "d.pkl").verdict == "unsafe"
    with pytest.raises(ValueError, match="severity"):
        ckptguard.scan(data, fail_on="bad")
    with pytest.raises(ValueError, match="module.name"):
        ckptguard.scan(data, allow=["nodot"])
    cfg.write_text("[allow]\nglobal = []\n")
    with pytest.raises(ValueError, match="invalid config"):
        ckptguard.scan(data, config=cfg)


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel,ref_path", benign_torch_files(), ids=lambda x: str(x).rsplit("/", 1)[-1])
def test_load_returns_what_torch_load_returns(rel, ref_path):
    ours = ckptguard.load(fx(rel))
    ref = torch.load(ref_path, weights_only=False, map_location="cpu")
    devs = same(ours, ref)
    assert {d for _, d in devs} <= KNOWN_DEVIATIONS
    assert storage_groups(ours) == storage_groups(ref)


def test_load_under_deterministic_algorithms():
    """Lightning's Trainer(deterministic=True) switches torch's global deterministic mode on, in
    which torch.empty fills memory and has no kernel for some dtypes (float4, bits8)."""
    p = fx("fixtures/load/dtypes.pt")
    ref = torch.load(p, weights_only=False)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ours = ckptguard.load(p)
    finally:
        torch.use_deterministic_algorithms(before)
    same(ours, ref)


def test_load_dcp_directory_like_lightning():
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    for rel in ("fixtures/containers/dcp/benign_plain",
                "fixtures/containers/dcp/lightning_sharded/epoch=0-step=3.ckpt"):
        p = fx(rel)
        ref: dict = {}
        _load_state_dict(ref, storage_reader=FileSystemReader(p), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
        if (p / "meta.pt").exists():  # Lightning's sharded layout (benign fixture: full load is fine)
            ref.update(torch.load(p / "meta.pt", weights_only=False))
        devs = same(ckptguard.load(p), ref)
        assert {d for _, d in devs} <= KNOWN_DEVIATIONS


def test_load_is_zero_copy_and_copy_on_write(tmp_path):
    sd = {"a": torch.arange(1 << 16, dtype=torch.float32), "b": torch.ones(3, 4, dtype=torch.float64)}
    sd["view"] = sd["a"][10:20]
    path = tmp_path / "m.pt"
    torch.save(sd, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ck = ckptguard.load(path)
    a, view = ck["a"], ck["view"]
    assert view.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
    assert view.storage_offset() == 10 and torch.equal(view, torch.arange(10, 20, dtype=torch.float32))
    # The bytes are a private mapping of the file: tensors are writable, the file never changes.
    a.mul_(2)
    ck["b"].add_(1)
    assert view[0].item() == 20.0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # The mapping lives as long as a tensor does.
    del ck, a
    import gc

    gc.collect()
    assert view.sum().item() == sum(range(20, 40, 2))


def test_load_bytes_file_objects_and_numpy_backend():
    p = fx("fixtures/containers/torch_zip/benign_mixed.pt")
    ref = torch.load(p, weights_only=False)
    same(ckptguard.load(p.read_bytes()), ref)
    with open(p, "rb") as f:
        same(ckptguard.load(f), ref)
    # backend="numpy": numpy arrays for tensors (what one gets without torch installed)
    q = fx("fixtures/load/views.pt")
    arrays, tensors = ckptguard.load(q, backend="numpy"), torch.load(q, weights_only=False)
    for k, v in tensors.items():
        assert isinstance(arrays[k], np.ndarray), k
        np.testing.assert_array_equal(arrays[k], v.detach().numpy(), err_msg=k)
    assert arrays["transposed"].base is not None  # a view of the mapping, not a copy
    if importlib_has("ml_dtypes"):
        assert ckptguard.load(p, backend="numpy")["bf16"].dtype.name == "bfloat16"
    else:
        with pytest.raises(ckptguard.UnsupportedCheckpointError, match="bfloat16"):
            ckptguard.load(p, backend="numpy")
    npz = ckptguard.load(fx("fixtures/containers/numpy/benign_arrays.npz"), backend="numpy")
    with np.load(fx("fixtures/containers/numpy/benign_arrays.npz")) as z:
        for k in z.files:
            np.testing.assert_array_equal(npz[k], z[k])


def importlib_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_load_map_location():
    p = fx("fixtures/containers/lightning/fabric_save.ckpt")
    seen = []

    def keep(storage, location):
        seen.append(location)
        return storage

    ck = ckptguard.load(p, map_location=keep)
    assert seen and set(seen) == {"cpu"}
    assert ckptguard.load(p, map_location="meta")["model"]["0.weight"].device.type == "meta"
    assert ckptguard.load(p, map_location={"cpu": "meta"})["model"]["0.weight"].is_meta
    assert ckptguard.load(p, map_location=torch.device("cpu"))["model"]["0.weight"].device.type == "cpu"
    same(ck, torch.load(p, weights_only=False))


def test_load_is_thread_safe_and_concurrent():
    p = fx("fixtures/containers/lightning/trainer_fit.ckpt")
    ref = torch.load(p, weights_only=False)
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(5):
                same(ckptguard.load(p), ref)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("entry", [e for e in LOADS if e["expect"] in ("unsupported", "malformed")],
                         ids=lambda e: e["path"].rsplit("/", 1)[-1])
def test_load_errors(entry):
    with pytest.raises(ckptguard.CheckpointError) as ei:
        ckptguard.load(fx(entry["path"]))
    e = ei.value
    if entry["expect"] == "malformed":
        assert isinstance(e, ckptguard.MalformedCheckpointError) or \
            (isinstance(e, ckptguard.UnsafeCheckpointError) and e.unreadable_only), repr(e)
    else:
        assert isinstance(e, (ckptguard.UnsupportedCheckpointError, ckptguard.UnsafeCheckpointError)), repr(e)


def test_load_refuses_with_the_findings():
    p = fx("fixtures/containers/torch_zip/mal_data_pkl.pt")
    with pytest.raises(ckptguard.UnsafeCheckpointError) as ei:
        ckptguard.load(p)
    e = ei.value
    assert e.path == str(p) and not e.unreadable_only
    assert e.findings and e.findings[0].global_ == "posix.system"
    assert e.report.verdict == "unsafe" and "posix.system" in str(e)
    # Survives being rebuilt from its message (DataLoader workers) and pickling.
    assert "posix.system" in str(type(e)(str(e)))
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    with pytest.raises(ckptguard.UnsupportedCheckpointError, match="not loaded"):
        ckptguard.load(fx("fixtures/containers/litdata/benign_plain"))
    with pytest.raises(ckptguard.UnsafeCheckpointError):
        ckptguard.load(fx("fixtures/containers/deepspeed/mal_optim_states/model.ckpt"))


REFUSE_ALL = r"""
import json, os, sys, ckptguard
paths = json.load(open(sys.argv[1]))
out = {}
for p in paths:
    try:
        ckptguard.load(p)
        out[p] = "loaded"
    except ckptguard.UnsafeCheckpointError as e:
        out[p] = "refused" if e.findings or e.report is not None else "refused-no-report"
    except ckptguard.CheckpointError as e:
        out[p] = type(e).__name__ + ": " + str(e)[:200]
    # the bytes and file-object entry points too
    if os.path.isfile(p):
        data = open(p, "rb").read()
        for how, src in (("bytes", data), ("file", open(p, "rb"))):
            try:
                ckptguard.load(src, name=os.path.basename(p))
                out[p + "::" + how] = "loaded"
            except ckptguard.UnsafeCheckpointError:
                out[p + "::" + how] = "refused"
            except ckptguard.CheckpointError as e:
                out[p + "::" + how] = type(e).__name__
json.dump({"results": out, "marker": os.path.exists("ckptguard_pwned")}, open(sys.argv[2], "w"))
"""


def test_every_malicious_fixture_is_refused_and_never_runs(tmp_path):
    mal = [e["path"] for e in PICKLES + CONTAINERS if e["expect"] == "unsafe"]
    req, out = tmp_path / "req.json", tmp_path / "out.json"
    req.write_text(json.dumps([str(fx(p)) for p in mal]))
    work = tmp_path / "cwd"
    work.mkdir()
    p = subprocess.run([sys.executable, "-c", REFUSE_ALL, str(req), str(out)], cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert not res["marker"] and not (work / MARKER).exists()
    not_refused = {k: v for k, v in res["results"].items() if v != "refused"}
    # A payload in bytes the loader never reads is still refused: the whole input is scanned.
    assert not not_refused, not_refused


# ---------------------------------------------------------------------------------------------
# signatures
# ---------------------------------------------------------------------------------------------

def test_sign_and_verify(tmp_path):
    model = tmp_path / "model.ckpt"
    model.write_bytes(fx("fixtures/containers/lightning/trainer_fit.ckpt").read_bytes())
    priv, pub = ckptguard.generate_key("P-384", password="pw")
    (tmp_path / "pub.pem").write_text(pub)
    s = ckptguard.sign(model, priv, password="pw")
    assert s.signature == str(tmp_path / "model.sig") and s.files == 1 and s.curve == "P-384"
    v = ckptguard.verify(model, tmp_path / "pub.pem")
    assert v.root_digest == s.root_digest and v.total_bytes == model.stat().st_size
    if BIN.exists():  # the CLI verifies what the package signed
        cli = subprocess.run([str(BIN), "verify", "--key", str(tmp_path / "pub.pem"), str(model)],
                             capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
    _, other = ckptguard.generate_key()
    with pytest.raises(ckptguard.SignatureError) as ei:
        ckptguard.verify(model, other)
    assert ei.value.invalid and ei.value.kind == "wrong_key"
    with open(model, "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    with pytest.raises(ckptguard.SignatureError) as ei:
        ckptguard.verify(model, pub)
    assert ei.value.kind == "mismatch"
    with pytest.raises(ckptguard.SignatureError) as ei:
        ckptguard.verify(model, pub, signature=tmp_path / "missing.sig")
    assert not ei.value.invalid
    with pytest.raises(ckptguard.SignatureError, match="password|decrypt|encrypted"):
        ckptguard.sign(model, priv)


# ---------------------------------------------------------------------------------------------
# the guard (in this process: benign inputs only; malicious ones run in test_lightning.py's
# child processes)
# ---------------------------------------------------------------------------------------------

def test_guard_patches_and_restores():
    import torch.serialization

    originals = (torch.load, torch.serialization.load, pickle.load, pickle.loads, pickle.Unpickler)
    assert not ckptguard.is_guarded()
    with ckptguard.guarded():
        assert ckptguard.is_guarded()
        assert torch.load is torch.serialization.load and torch.load is not originals[0]
        assert torch.load.__wrapped__ is originals[0]
        assert pickle.Unpickler is not originals[4] and issubclass(pickle.Unpickler, originals[4])
        import ipaddress

        data = pickle.dumps(ipaddress.ip_address("10.0.0.1"))
        with ckptguard.guarded(fail_on="critical"):
            pickle.loads(data)  # an unknown class is high: passes when failing at critical
        with pytest.raises(ckptguard.UnsafeCheckpointError):
            pickle.loads(data)  # back to high
    assert (torch.load, torch.serialization.load, pickle.load, pickle.loads, pickle.Unpickler) == originals
    assert not ckptguard.is_guarded()


def test_guard_passes_benign_input_through_unchanged(tmp_path):
    p = fx("fixtures/containers/lightning/trainer_fit.ckpt")
    ref = torch.load(p, weights_only=False)
    obj = {"a": [1, 2.5, "x"], "t": (None, True), "b": b"\x00"}
    with ckptguard.guarded():
        same(torch.load(p, weights_only=False), ref)
        buf = io.BytesIO(b"xx" + p.read_bytes())
        buf.seek(2)
        same(torch.load(buf, weights_only=False), ref)
        assert pickle.loads(pickle.dumps(obj, protocol=5)) == obj
        # Several pickles in one file: each load reads one, positions stay right.
        f = tmp_path / "seq.pkl"
        with open(f, "wb") as fh:
            for i in range(3):
                pickle.dump({"i": i}, fh)
        with open(f, "rb") as fh:
            assert [pickle.load(fh) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
            u = pickle.Unpickler(fh)
            fh.seek(0)
            assert u.load() == {"i": 0}
        # A non-seekable stream (a pipe): the guard reads exactly one pickle ahead.
        r, w = os.pipe()
        with os.fdopen(w, "wb") as wf:
            for i in range(3):
                pickle.dump([i] * 3, wf)
        with os.fdopen(r, "rb", buffering=0) as rf:
            assert pickle.load(rf) == [0, 0, 0]
            assert pickle.Unpickler(rf).load() == [1, 1, 1]
            assert pickle.loads(rf.read()) == [2, 2, 2]
        # A stream that ends inside a pickle: the loader fails as it would, and never waits
        # for (or reads) bytes beyond what was scanned.
        r, w = os.pipe()
        with os.fdopen(w, "wb") as wf:
            wf.write(pickle.dumps(list(range(100)))[:-5])
        with os.fdopen(r, "rb", buffering=0) as rf, \
                pytest.raises((EOFError, pickle.UnpicklingError, ckptguard.UnsafeCheckpointError)):
            pickle.load(rf)
        # Not a pickle at all: the original's own error, not a refusal.
        with pytest.raises(pickle.UnpicklingError):
            pickle.loads(b"garbage that is not a pickle")


def test_guard_scans_each_load_once(monkeypatch):
    calls = []
    native = ckptguard._native
    for name in ("check_data", "check_path"):
        orig = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _o=orig, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    p = fx("fixtures/containers/legacy/benign.pt")  # legacy: torch runs five pickle loads inside
    with ckptguard.guarded():
        torch.load(p, weights_only=False)
        assert calls == ["check_path"]
        calls.clear()
        with open(p, "rb") as f:
            torch.load(f, weights_only=False)
        assert calls == ["check_data"]


def test_guard_reads_long_pickle_streams_pickle_by_pickle(tmp_path):
    """A file of many pickles (more than the scanner's per-stream limit) loads in a loop: each
    load scans only the pickle it reads, so the whole file is scanned once, in linear time."""
    f = tmp_path / "records.pkl"
    with open(f, "wb") as fh:
        for i in range(3000):
            pickle.dump({"i": i, "x": list(range(20))}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump({"big": b"\0" * (1 << 20)}, fh)  # longer than the first read of 64 KiB
        fh.write(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.")
    with ckptguard.guarded(), open(f, "rb") as fh:
        assert [pickle.load(fh)["i"] for _ in range(3000)] == list(range(3000))
        assert len(pickle.load(fh)["big"]) == 1 << 20
        with pytest.raises(ckptguard.UnsafeCheckpointError, match="posix.system"):
            pickle.load(fh)
        # pickle.loads reads the first pickle only, like the original
        assert pickle.loads(pickle.dumps(1) + b"\x80\x02cposix\nsystem\nX\x01\x00\x00\x00x\x85R.") == 1

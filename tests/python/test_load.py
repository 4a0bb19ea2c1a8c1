"""Safe loading and conversion, checked against torch itself.

For every benign torch fixture (``fixtures/load`` and the torch-zip / Lightning / Fabric /
legacy / DeepSpeed / DCP fixtures of ``fixtures/containers``), ``ckptguard convert`` must produce
a safetensors file that the ``safetensors`` package loads and whose tensors equal, bit for bit,
the tensors of ``torch.load(weights_only=False)`` of the original, flattened with the same key
rule (dict keys and list/tuple indices joined by ``.``). DCP directories (and Lightning's sharded
layout) are read by torch's own DCP reader the way Lightning's ``_load_distributed_checkpoint``
does, and there every non-tensor value of ``ckptguard inspect --format json`` must equal torch's
too. Every malicious fixture must be refused without its payload running.

    CKPTGUARD_BIN=target/release/ckptguard /tmp/venv/bin/python -m pytest tests/python/test_load.py
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

REPO = pathlib.Path(__file__).resolve().parents[2]
def default_bin() -> pathlib.Path:
    """The newest release build: <repo>/target/release or the explicit-target directory."""
    cands = [REPO / "target" / "release" / "ckptguard", REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "ckptguard"]
    found = [c for c in cands if c.exists()]
    return max(found, key=lambda c: c.stat().st_mtime) if found else cands[0]


BIN = pathlib.Path(os.environ.get("CKPTGUARD_BIN") or default_bin()).resolve()
MARKER = "ckptguard_pwned"

if not BIN.exists():
    pytest.skip(f"ckptguard binary not found at {BIN} (set CKPTGUARD_BIN)", allow_module_level=True)


def manifest(rel: str) -> list[dict]:
    p = REPO / rel
    return json.loads(p.read_text()) if p.exists() else []


LOAD = manifest("fixtures/load/manifest.json")
CONTAINERS = manifest("fixtures/containers/manifest.json")
TORCH_KINDS = {"torch_zip", "lightning_ckpt", "fabric_ckpt", "legacy", "deepspeed_dir", "dcp_dir"}


def deepspeed_model_states(d: pathlib.Path) -> pathlib.Path:
    tag = (d / "latest").read_text().strip()
    return d / tag / "mp_rank_00_model_states.pt"


def benign() -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """(id, what to pass to ckptguard, what torch.load reads)."""
    out = []
    for e in LOAD:
        if e["expect"] == "convert":
            p = REPO / e["path"]
            out.append((e["path"], p, REPO / e.get("reference", e["path"])))
    for e in CONTAINERS:
        if e["expect"] != "safe" or e["kind"] not in TORCH_KINDS:
            continue
        p = REPO / e["path"]
        ref = deepspeed_model_states(p) if e["kind"] == "deepspeed_dir" else p
        out.append((e["path"], p, ref))
    return out


def malicious() -> list[pathlib.Path]:
    out = sorted(p for p in (REPO / "fixtures/pickle/malicious").rglob("*") if p.is_file())
    out += [REPO / e["path"] for e in CONTAINERS if e["expect"] == "unsafe"]
    return out


def run(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


# How the checker subprocesses load a reference: torch.load(weights_only=False), or — for a DCP
# directory — torch's DCP reader with no process group, as Lightning's
# _load_distributed_checkpoint does (plus meta.pt, loaded with weights_only=False like the
# container liveness test's lightning_sharded_full loader). Benign fixtures only.
REFERENCE = textwrap.dedent(
    r"""
    import os
    import torch

    def reference(path):
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata")):
            from torch.distributed.checkpoint import FileSystemReader
            from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
            from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
            ck = {}
            _load_state_dict(ck, storage_reader=FileSystemReader(path),
                             planner=_EmptyStateDictLoadPlanner(), no_dist=True)
            meta = os.path.join(path, "meta.pt")
            if os.path.isfile(meta):
                ck.update(torch.load(meta, map_location="cpu", weights_only=False))
            return ck
        return torch.load(path, weights_only=False, map_location="cpu")
    """
)

# The comparison runs in one subprocess (torch imported once): it loads each original (see
# REFERENCE) — benign fixtures only — flattens it, loads the converted file with safetensors,
# and compares names and bytes.
CHECKER = REFERENCE + textwrap.dedent(
    r"""
    import argparse, json, sys
    import numpy as np, torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    def as_tensor(x):
        if isinstance(x, np.ndarray):
            x = np.ascontiguousarray(x.astype(x.dtype.newbyteorder("=")))
            return torch.from_numpy(x)
        return x

    def flatten(obj, prefix, out):
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            out[prefix or "tensor"] = as_tensor(obj)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
        elif isinstance(obj, argparse.Namespace):
            flatten(vars(obj), prefix, out)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for i, v in enumerate(obj):
                flatten(v, f"{prefix}.{i}" if prefix else str(i), out)

    def raw(t):
        t = t.detach()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        t = t.contiguous()
        return t.view(torch.uint8).numpy().tobytes() if t.numel() and t.dim() else t.reshape(-1).view(torch.uint8).numpy().tobytes()

    failures = []
    for ref, out in json.load(sys.stdin):
        want = {}
        flatten(reference(ref), "", want)
        got = load_file(out)
        meta = safe_open(out, "pt").metadata()
        if meta.get("format") != "pt":
            failures.append(f"{ref}: metadata format is {meta.get('format')!r}")
        for k, v in meta.items():
            if k != "format":
                json.loads(v)
        if set(want) != set(got):
            failures.append(f"{ref}: names differ: missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}")
            continue
        for k, w in want.items():
            g = got[k]
            if w.dtype != g.dtype or tuple(w.shape) != tuple(g.shape):
                failures.append(f"{ref}: {k}: {w.dtype}{tuple(w.shape)} != {g.dtype}{tuple(g.shape)}")
            elif raw(w) != raw(g):
                failures.append(f"{ref}: {k}: bytes differ")
    print(json.dumps(failures))
    """
)


def test_benign_fixtures_exist():
    assert len(benign()) >= 10, "fixtures missing: run fixtures/gen_load.py"


def test_convert_matches_torch_bit_for_bit(tmp_path):
    pairs = []
    for ident, src, ref in benign():
        out = tmp_path / (ident.replace("/", "_") + ".safetensors")
        r = run(["convert", src, "-o", out], tmp_path)
        assert r.returncode == 0, f"{ident}: rc={r.returncode} {r.stderr}"
        assert out.exists()
        pairs.append((str(ref), str(out)))
    r = subprocess.run([sys.executable, "-c", CHECKER], input=json.dumps(pairs), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    failures = json.loads(r.stdout.strip().splitlines()[-1])
    assert failures == []
    assert not (tmp_path / MARKER).exists()


def test_inspect_json_lists_every_tensor(tmp_path):
    for ident, src, _ in benign():
        r = run(["inspect", src, "--format", "json"], tmp_path)
        assert r.returncode == 0, f"{ident}: {r.stderr}"
        doc = json.loads(r.stdout)
        assert doc["verdict"] == "safe"
        assert doc["tensor_count"] == len(doc["tensors"]) > 0
        assert all(t["nbytes"] >= 0 and isinstance(t["shape"], list) for t in doc["tensors"])


def test_key_selects_a_subtree(tmp_path):
    src = REPO / "fixtures/load/optimizer.pt"
    out = tmp_path / "sd.safetensors"
    r = run(["convert", src, "-o", out, "--key", "state_dict"], tmp_path)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file

    got = load_file(out)
    want = torch.load(src, weights_only=False)["state_dict"]
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k])
    r = run(["convert", src, "-o", out.with_name("x.safetensors"), "--key", "nope"], tmp_path)
    assert r.returncode == 2 and not out.with_name("x.safetensors").exists()


@pytest.mark.parametrize("entry", [e for e in LOAD if e["expect"] != "convert"], ids=lambda e: e["path"])
def test_refused_or_unconvertible(entry, tmp_path):
    src = REPO / entry["path"]
    out = tmp_path / "out.safetensors"
    r = run(["convert", src, "-o", out], tmp_path)
    assert r.returncode in ((2,) if entry["expect"] in ("inspect_only", "malformed") else (1, 2)), r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left behind
    r = run(["inspect", src], tmp_path)
    assert r.returncode == (0 if entry["expect"] == "inspect_only" else r.returncode)
    if entry["expect"] != "inspect_only":
        assert r.returncode in (1, 2)


@pytest.mark.parametrize("path", malicious(), ids=lambda p: str(p.relative_to(REPO)))
def test_malicious_refused_and_payload_never_runs(path, tmp_path):
    out = tmp_path / "out.safetensors"
    r = run(["convert", path, "-o", out], tmp_path)
    assert r.returncode in (1, 2), f"rc={r.returncode} {r.stdout} {r.stderr}"
    assert not out.exists()
    r2 = run(["inspect", path], tmp_path)
    assert r2.returncode in (1, 2)
    assert not (tmp_path / MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# The value tree torch builds, in ckptguard's JSON encoding (crates/load/src/json.rs): tensors
# and numpy arrays as {"__tensor__": dotted name}, tuples/sets as arrays, Namespace as its
# dict, paths as str, numpy scalars as Python numbers. Printed with key order kept.
VALUES = REFERENCE + textwrap.dedent(
    r"""
    import argparse, base64, json, math, pathlib, sys
    import numpy as np

    def key(k):
        return k if isinstance(k, str) else str(k)

    def enc(v, path):
        child = lambda k: f"{path}.{k}" if path else k
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            v = int(v)
            return v if -2**63 <= v < 2**63 else {"__int__": str(v)}
        if isinstance(v, (float, np.floating)):
            v = float(v)
            if math.isfinite(v):
                return v
            return {"__float__": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(v, complex):
            return {"__complex__": [enc(v.real, ""), enc(v.imag, "")]}
        if isinstance(v, bytes):
            return {"__bytes__": base64.b64encode(v).decode()}
        if isinstance(v, bytearray):
            return {"__bytearray__": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, (torch.Tensor, np.ndarray)):
            return {"__tensor__": path}
        if isinstance(v, argparse.Namespace):
            v = vars(v)
        if isinstance(v, dict):
            return {key(k): enc(x, child(key(k))) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [enc(x, child(str(i))) for i, x in enumerate(v)]
        if isinstance(v, torch.dtype):
            return str(v)
        if isinstance(v, torch.device):
            return str(v)
        if isinstance(v, pathlib.PurePath):
            return str(v)
        raise TypeError(f"{path}: no encoding for {type(v).__name__}")

    def tensors(v, path, out):
        child = lambda k: f"{path}.{k}" if path else k
        if isinstance(v, (torch.Tensor, np.ndarray)):
            out.append(path)
        elif isinstance(v, argparse.Namespace):
            tensors(vars(v), path, out)
        elif isinstance(v, dict):
            for k, x in v.items():
                tensors(x, child(key(k)), out)
        elif isinstance(v, (list, tuple, set, frozenset)):
            for i, x in enumerate(v):
                tensors(x, child(str(i)), out)
        return out

    out = []
    for p in json.load(sys.stdin):
        ck = reference(p)
        out.append({"tree": enc(ck, ""), "tensors": tensors(ck, "", [])})
    print(json.dumps(out))
    """
)


def dcp_benign() -> list[pathlib.Path]:
    return [REPO / e["path"] for e in CONTAINERS if e["kind"] == "dcp_dir" and e["expect"] == "safe"]


def test_dcp_values_and_tensor_metadata_match_torch(tmp_path):
    dirs = dcp_benign()
    assert len(dirs) >= 2, "DCP fixtures missing: run fixtures/gen_containers.py"
    ours = []
    for d in dirs:
        r = run(["inspect", d, "--format", "json"], tmp_path)
        assert r.returncode == 0, f"{d}: {r.stderr}"
        ours.append(json.loads(r.stdout))
    r = subprocess.run([sys.executable, "-c", VALUES], input=json.dumps([str(d) for d in dirs]),
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    want = json.loads(r.stdout.strip().splitlines()[-1])
    for d, doc, w in zip(dirs, ours, want):
        # Same values (the JSON's objects are key-sorted; order is checked on the tensors).
        assert json.dumps(doc["tree"], sort_keys=True) == json.dumps(w["tree"], sort_keys=True), \
            f"{d}: value trees differ"
        assert [t["name"] for t in doc["tensors"]] == w["tensors"], f"{d}: tensor order differs"
        # torch's DCP reader gives fresh contiguous CPU tensors without requires_grad.
        dcp_part = [t for t in doc["tensors"] if not t.get("numpy") and not t["name"].startswith("callbacks.")]
        assert dcp_part and all(t["contiguous"] and t["storage_offset"] == 0 and not t["requires_grad"]
                                and t["device"] == "cpu" for t in dcp_part), d
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("entry", [e for e in CONTAINERS if e["kind"] == "dcp_dir" and e["expect"] == "unsafe"],
                         ids=lambda e: e["path"])
def test_malicious_dcp_refused_with_exit_1(entry, tmp_path):
    src = REPO / entry["path"]
    for args in (["convert", src, "-o", tmp_path / "out.safetensors"], ["inspect", src]):
        r = run(args, tmp_path)
        assert r.returncode == 1, f"{args[0]}: rc={r.returncode} {r.stderr}"
        assert "refused" in r.stderr and "unsafe" in r.stderr, r.stderr
    assert not (tmp_path / MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def write_dcp(d: pathlib.Path, entries: dict, planner=None, files=("__0_0.distcp", "__1_0.distcp")):
    """A DCP directory written item by item the way FileSystemWriter lays it out (each item a
    torch.save zip at its _StorageInfo range; items spread over several data files), so sharded
    tensors (several chunks) can be made without a process group. ``entries``: fqn ->
    ("t", full tensor, [(chunk offsets, chunk sizes, how the chunk is saved)]) or ("b", object)."""
    import io
    import pickle

    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                       MetadataIndex, TensorProperties, TensorStorageMetadata)

    d.mkdir(parents=True)
    bufs = {f: bytearray() for f in files}
    sdm, sd = {}, {}

    def put(obj):
        f = files[len(sd) % len(files)]
        b = io.BytesIO()
        torch.save(obj, b)
        b = b.getvalue()
        info = _StorageInfo(relative_path=f, offset=len(bufs[f]), length=len(b))
        bufs[f] += b
        return info

    for fqn, e in entries.items():
        if e[0] == "b":
            sdm[fqn] = BytesStorageMetadata()
            sd[MetadataIndex(fqn)] = put(e[1])
            continue
        full, chunks = e[1], e[2]
        cms = []
        for off, size, how in chunks:
            part = full[tuple(slice(o, o + s) for o, s in zip(off, size))] if off else full
            cms.append(ChunkStorageMetadata(offsets=torch.Size(off), sizes=torch.Size(size)))
            sd[MetadataIndex(fqn, torch.Size(off))] = put(how(part.clone()))
        sdm[fqn] = TensorStorageMetadata(properties=TensorProperties(dtype=full.dtype), size=full.size(), chunks=cms)
    for f, b in bufs.items():
        (d / f).write_bytes(bytes(b))
    md = Metadata(state_dict_metadata=sdm, planner_data=planner, storage_data=sd)
    (d / ".metadata").write_bytes(pickle.dumps(md, protocol=4))
    return d


def test_sharded_dcp_tensors_are_assembled_like_torch(tmp_path):
    """Tensors saved as several chunks (row and column splits, unordered, empty and 0-d chunks,
    non-contiguous / conj / oversized saved chunks) are assembled exactly as torch's DCP reader
    fills them; planner_data nests dicts and lists the way set_element does."""
    same = lambda t: t
    colmajor = lambda t: t.t().contiguous().t()
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=gen)
    bf = torch.randn(5, 3, generator=gen).to(torch.bfloat16)
    c = torch.randn(3, 2, dtype=torch.complex64, generator=gen)
    entries = {
        "model.w": ("t", w, [((0, 0), (2, 6), same), ((2, 3), (2, 3), same), ((2, 0), (2, 3), colmajor)]),
        "model.bf": ("t", bf, [((3, 0), (2, 3), same), ((0, 0), (3, 3), same), ((5, 0), (0, 3), same)]),
        "opt.state.0.step": ("t", torch.tensor(7.0), [((), (), same)]),
        "opt.param_groups.0.lr": ("b", 0.5),
        "opt.param_groups.0.params": ("b", [0, 1]),
        "groups.0.c": ("t", c, [((0, 0), (1, 2), same), ((1, 0), (2, 2), lambda t: t.conj())]),
        "groups.1.i": ("t", torch.arange(10, dtype=torch.int16), [((0,), (10,), lambda t: torch.cat([t, t]))]),
        "flat": ("b", {"x": (1, "y"), "z": None}),
    }
    planner = {
        "model.w": ("model", "w"), "model.bf": ("model", "bf"),
        "opt.state.0.step": ("opt", "state", "0", "step"),
        "opt.param_groups.0.lr": ("opt", "param_groups", 0, "lr"),
        "opt.param_groups.0.params": ("opt", "param_groups", 0, "params"),
        "groups.0.c": ("groups", 0, "c"), "groups.1.i": ("groups", 1, "i"),
    }
    src = write_dcp(tmp_path / "sharded", entries, planner)
    out = tmp_path / "out.safetensors"
    r = run(["convert", src, "-o", out], tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", CHECKER], input=json.dumps([(str(src), str(out))]),
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    r = run(["inspect", src, "--format", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    r = subprocess.run([sys.executable, "-c", VALUES], input=json.dumps([str(src)]),
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    want = json.loads(r.stdout.strip().splitlines()[-1])[0]
    assert json.dumps(doc["tree"], sort_keys=True) == json.dumps(want["tree"], sort_keys=True)
    assert [t["name"] for t in doc["tensors"]] == want["tensors"]
    assert doc["tensor_count"] == 5


@pytest.mark.parametrize("case,why", [
    ("overlap", "overlap"),
    ("uncovered", "cover 18 of its 24 elements"),
    ("dtype", "float64 but the metadata says float32"),
])
def test_inexact_sharded_dcp_is_refused(case, why, tmp_path):
    """Layouts where torch's result depends on read order, leaves memory uninitialised, or
    converts dtypes are refused rather than approximated."""
    w = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    same = lambda t: t
    chunks = {
        "overlap": [((0, 0), (3, 6), same), ((2, 0), (2, 6), same)],
        "uncovered": [((0, 0), (3, 6), same)],
        "dtype": [((0, 0), (4, 6), lambda t: t.double())],
    }[case]
    src = write_dcp(tmp_path / "d", {"w": ("t", w, chunks)}, files=("__0_0.distcp",))
    out = tmp_path / "out.safetensors"
    r = run(["convert", src, "-o", out], tmp_path)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr, r.stderr
    assert not out.exists()

"""Prove the container fixtures behave as fixtures/containers/manifest.json says, with the REAL loaders.

* unsafe + live    -> the named loader, run in a child process whose cwd is a fresh temp dir,
                      creates ``ckptguard_pwned`` there.
* unsafe, not live -> the loader does NOT create the marker (and fails with ``expected_error`` if given).
* safe             -> the loader succeeds and creates no marker.
* ``also_live_via`` / ``not_live_via`` are checked the same way for the extra loaders.
* ``weights_only_ok`` / ``weights_only_safe_globals`` are re-checked with torch.load(weights_only=True).

Malicious fixtures are only ever loaded inside those child processes. To keep the run short, one
runner process per batch imports torch/lightning/litdata once and forks a fresh child per job
(the child chdirs into its own temp dir; 120 s alarm). Two batches run in parallel.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("litdata")

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "fixtures" / "containers"
MANIFEST_PATH = FIX / "manifest.json"
MARKER = "ckptguard_pwned"
KINDS = {"torch_zip", "torchscript", "legacy", "legacy_tar", "deepspeed_dir", "dcp_dir", "litdata_dir",
         "lightning_ckpt", "fabric_ckpt", "npz"}
LOADERS = {"torch_full", "torch_weights_only", "torch_default", "torch_jit_load", "deepspeed_load_checkpoint",
           "dcp", "lightning_dcp", "lightning_sharded_full", "litdata", "lazy_load", "cloud_io_path",
           "cloud_io_path_default", "cloud_io_bytes", "cloud_io_url", "lightning_load_from_checkpoint",
           "numpy_allow_pickle", "numpy_load"}

if not hasattr(os, "fork"):
    pytest.skip("the live runner forks one child per fixture (POSIX only)", allow_module_level=True)
if not MANIFEST_PATH.is_file():
    pytest.skip("fixtures/containers/manifest.json missing (run fixtures/gen_containers.py)",
                allow_module_level=True)
MANIFEST = json.loads(MANIFEST_PATH.read_text())


def _stub_source() -> str:
    """DeepSpeed stand-ins: the generator's DEEPSPEED_STUB_SOURCE, read without importing torch."""
    src = (REPO / "fixtures" / "gen_containers.py").read_text()
    start = src.index("DEEPSPEED_STUB_SOURCE = '''") + len("DEEPSPEED_STUB_SOURCE = '''")
    return src[start:src.index("'''", start)]


# --------------------------------------------------------------------------------------------
# the runner (executed as a separate Python process)
# --------------------------------------------------------------------------------------------
RUNNER = r'''
import glob, io, json, os, signal, sys, tempfile, threading, warnings
warnings.filterwarnings("ignore")
os.environ.setdefault("PYTHONWARNINGS", "ignore")
req = json.load(open(sys.argv[1]))
MARKER = "ckptguard_pwned"

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import lightning
import litdata
from lightning.fabric.utilities import cloud_io
from lightning.fabric.utilities.load import _lazy_load, _load_distributed_checkpoint, _materialize_tensors


def summarize(v):
    if isinstance(v, dict):
        return {"type": type(v).__name__, "keys": sorted(map(str, v))[:40]}
    return {"type": type(v).__name__}


def dcp_template(t):
    if isinstance(t, dict) and "__tensor__" in t:
        return torch.zeros(t["__tensor__"], dtype=getattr(torch, t["dtype"]))
    if isinstance(t, dict):
        return {k: dcp_template(v) for k, v in t.items()}
    return None


def serve(path):
    import functools, http.server
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.dirname(path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/{os.path.basename(path)}"


def run(job):
    p, loader = job["path"], job["loader"]
    if loader == "torch_full":
        return summarize(torch.load(p, weights_only=False, map_location="cpu"))
    if loader == "torch_weights_only":
        return summarize(torch.load(p, weights_only=True, map_location="cpu"))
    if loader == "torch_default":
        return summarize(torch.load(p, map_location="cpu"))
    if loader == "torch_jit_load":
        m = torch.jit.load(p, map_location="cpu")
        return {"type": type(m).__name__, "out": m(torch.ones(1, 3)).shape[-1]}
    if loader == "deepspeed_load_checkpoint":
        # DeepSpeedEngine.load_checkpoint(load_dir, tag=None): tag = read(latest).strip();
        # ckpt = os.path.join(load_dir, tag, "mp_rank_00_model_states.pt");
        # TorchCheckpointEngine.load = torch.load(path, weights_only=False); then ZeRO optim shards.
        exec(job["stubs"], {})
        tag = open(os.path.join(p, "latest")).read().strip()
        base = os.path.join(p, tag)
        out = summarize(torch.load(os.path.join(base, "mp_rank_00_model_states.pt"), map_location="cpu",
                                   weights_only=False))
        shards = sorted(glob.glob(os.path.join(base, "*zero_pp_rank_*_mp_rank_*_optim_states.pt")))
        for s in shards:
            torch.load(s, map_location="cpu", weights_only=False)
        out["optim_shards"] = len(shards)
        return out
    if loader == "dcp":
        sd = dcp_template(job["dcp_state"])
        dcp.load(sd, checkpoint_id=p)
        return {"keys": sorted(sd)}
    if loader == "lightning_dcp":
        from pathlib import Path
        return summarize(_load_distributed_checkpoint(Path(p)))
    if loader == "lightning_sharded_full":
        # lightning.fabric.utilities.load._load_distributed_checkpoint, with meta.pt loaded the way
        # FSDPStrategy.load_checkpoint(weights_only=False) / torch<2.6 defaults do
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
        ck = {}
        _load_state_dict(ck, storage_reader=FileSystemReader(p), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
        ck.update(torch.load(os.path.join(p, "meta.pt"), map_location="cpu", weights_only=False))
        return summarize(ck)
    if loader == "litdata":
        enc = None
        if job.get("litdata_password"):
            from litdata.utilities.encryption import FernetEncryption
            enc = FernetEncryption.load(job["litdata_encryption_file"], job["litdata_password"])
        # litdata decompresses whole-file .zstd.bin chunks next to the index of a local input_dir:
        # work on a copy inside the child's temp cwd so the fixture stays untouched
        import shutil
        p = shutil.copytree(p, os.path.join(os.getcwd(), "dataset"))
        ds = litdata.StreamingDataset(p, encryption=enc)
        items = list(ds)  # iterate like a training loop
        return {"items": len(items), "fields": sorted(items[0])}
    if loader == "lazy_load":
        return summarize(_materialize_tensors(_lazy_load(p)))
    if loader == "cloud_io_path":
        return summarize(cloud_io._load(p, map_location="cpu", weights_only=False))
    if loader == "cloud_io_path_default":
        return summarize(cloud_io._load(p, map_location="cpu"))
    if loader == "cloud_io_bytes":
        with open(p, "rb") as f:
            buf = io.BytesIO(f.read())
        return summarize(cloud_io._load(buf, map_location="cpu", weights_only=False))
    if loader == "cloud_io_url":
        for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            os.environ.pop(k, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        srv, url = serve(p)
        try:
            return dict(summarize(cloud_io._load(url, map_location="cpu")), url=url)  # default weights_only
        finally:
            srv.shutdown()
    if loader == "lightning_load_from_checkpoint":
        import lightning as L

        class Victim(L.LightningModule):
            def __init__(self, **kwargs):
                super().__init__()
                self.net = torch.nn.Linear(3, 1)

        m = Victim.load_from_checkpoint(p, map_location="cpu", strict=False)
        return {"type": type(m).__name__}
    if loader == "numpy_allow_pickle":
        with np.load(p, allow_pickle=True) as z:
            return {"arrays": {k: str(z[k].dtype) for k in z.files}}
    if loader == "numpy_load":
        with np.load(p, allow_pickle=False) as z:
            return {"arrays": {k: str(z[k].dtype) for k in z.files}}
    if loader == "wo_check":
        import importlib
        def resolve(dotted):
            parts = dotted.split(".")
            for i in range(len(parts) - 1, 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                    for q in parts[i:]:
                        obj = getattr(obj, q)
                    return obj
                except (ImportError, AttributeError):
                    continue
            raise LookupError(dotted)
        exec(job["stubs"], {})
        res = {}
        try:
            torch.load(p, weights_only=True, map_location="cpu")
            res["plain_ok"] = True
        except Exception as e:
            res["plain_ok"] = False
            res["plain_error"] = str(e)[:3000]
        if job["safe_globals"]:
            with torch.serialization.safe_globals([resolve(n) for n in job["safe_globals"]]):
                torch.load(p, weights_only=True, map_location="cpu")
            res["with_globals_ok"] = True
        return res
    raise ValueError(f"unknown loader {loader}")


results = {}
for job in req["jobs"]:
    wd = tempfile.mkdtemp(prefix="ckg_", dir=req["tmp"])
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: fresh cwd, own alarm
        os.close(rfd)
        try:
            signal.alarm(int(job.get("timeout", 120)))
            os.chdir(wd)
            os.environ["TORCH_HOME"] = os.path.join(wd, ".torch_home")
            os.environ["HOME"] = wd
            try:
                res = {"ok": True, "result": run(job)}
            except BaseException as e:  # noqa: BLE001
                res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:3000]}
            os.write(wfd, json.dumps(res, default=str).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        c = os.read(rfd, 1 << 16)
        if not c:
            break
        chunks.append(c)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    res = json.loads(raw) if raw else {"ok": False, "error": f"child died (wait status {status})"}
    res["marker"] = os.path.exists(os.path.join(wd, MARKER))
    res["cwd"] = wd
    results[job["id"]] = res
json.dump(results, open(sys.argv[2], "w"), indent=1)
'''


# --------------------------------------------------------------------------------------------
# jobs derived from the manifest
# --------------------------------------------------------------------------------------------
def _job(ent, loader, expect, *, suffix=None, **extra):
    jid = ent["path"] + "::" + (suffix or loader)
    j = {"id": jid, "path": str(REPO / ent["path"]), "loader": loader, "expect": expect, "timeout": 120}
    for k in ("dcp_state", "litdata_password", "npz_member"):
        if k in ent:
            j[k] = ent[k]
    if "litdata_encryption_file" in ent:
        j["litdata_encryption_file"] = str(REPO / ent["litdata_encryption_file"])
    j.update(extra)
    return j


def build_jobs():
    jobs = []
    for ent in MANIFEST:
        if ent["expect"] == "safe":
            jobs.append(_job(ent, ent["loader"], "loads_clean"))
        elif ent["live"]:
            jobs.append(_job(ent, ent["loader"], "marker"))
        else:
            jobs.append(_job(ent, ent["loader"], "no_marker", expected_error=ent.get("expected_error")))
        for extra in ent.get("also_live_via", []):
            jobs.append(_job(ent, extra, "marker"))
        for extra, _why in ent.get("not_live_via", {}).items():
            jobs.append(_job(ent, extra, "no_marker"))
        for extra, err in ent.get("fails_via", {}).items():
            jobs.append(_job(ent, extra, "no_marker", expected_error=err))
        if "weights_only_ok" in ent and ent["weights_only_ok"] is not None:
            p = REPO / ent["path"]
            if "weights_only_files" in ent:
                for f, r in ent["weights_only_files"].items():
                    jobs.append(_job(ent, "wo_check", ("wo", r["ok"], r.get("error")), suffix=f"wo:{f}",
                                     path=str(p / f), safe_globals=r["safe_globals"]))
            else:
                jobs.append(_job(ent, "wo_check", ("wo", ent["weights_only_ok"], ent.get("weights_only_error")),
                                 suffix="wo", safe_globals=ent.get("weights_only_safe_globals", [])))
    return jobs


JOBS = build_jobs()


def _tree_state():
    return {p.relative_to(FIX).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in FIX.rglob("*") if p.is_file()}


TREE_BEFORE: dict = {}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    TREE_BEFORE.update(_tree_state())
    stubs = _stub_source()
    base = tmp_path_factory.mktemp("container_live")
    batches = [JOBS[0::2], JOBS[1::2]]
    procs = []
    for i, batch in enumerate(batches):
        req = base / f"req{i}.json"
        out = base / f"res{i}.json"
        req.write_text(json.dumps({"tmp": str(base), "jobs": [dict(j, stubs=stubs) for j in batch]}))
        env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONDONTWRITEBYTECODE="1")
        procs.append((subprocess.Popen([sys.executable, "-c", RUNNER, str(req), str(out)], cwd=base,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env), out))
    merged = {}
    for proc, out in procs:
        try:
            _, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
        merged.update(json.loads(out.read_text()))
    return merged


@pytest.mark.parametrize("job", JOBS, ids=[j["id"].replace("fixtures/containers/", "") for j in JOBS])
def test_fixture_behaviour(job, results):
    r = results[job["id"]]
    exp = job["expect"]
    if exp == "marker":
        assert r["marker"], f"payload did not run via {job['loader']}: {r.get('error') or r.get('result')}"
    elif exp == "no_marker":
        assert not r["marker"], f"fixture marked not live but {job['loader']} ran the payload"
        if job.get("expected_error"):
            assert not r["ok"] and job["expected_error"] in r["error"], r
    elif exp == "loads_clean":
        assert r["ok"], f"benign fixture failed to load via {job['loader']}: {r.get('error')}"
        assert not r["marker"]
    else:
        _, ok, _err = exp
        assert r["ok"], r.get("error")
        res = r["result"]
        assert not r["marker"]
        assert res["plain_ok"] is ok, res
        if not ok and job["safe_globals"]:
            assert res.get("with_globals_ok") is True, res
            first = job["safe_globals"][0]
            assert first in res["plain_error"], (first, res["plain_error"][:500])


# --------------------------------------------------------------------------------------------
# static checks (no unpickling in this process)
# --------------------------------------------------------------------------------------------
def test_manifest_schema():
    seen = set()
    for e in MANIFEST:
        assert set(e) >= {"path", "kind", "expect", "loader", "live", "note", "expect_findings"}, e
        assert e["path"] not in seen
        seen.add(e["path"])
        assert (REPO / e["path"]).exists(), e["path"]
        assert e["kind"] in KINDS and e["expect"] in ("safe", "unsafe") and e["loader"] in LOADERS, e
        assert isinstance(e["live"], bool)
        if e["expect"] == "unsafe" and not e["live"]:
            assert e.get("why_not_live"), e["path"]
        if e["expect"] == "unsafe":
            assert e["expect_findings"], e["path"]
        else:
            assert not e["live"] and "weights_only_ok" in e, e["path"]
        for extra in [*e.get("also_live_via", []), *e.get("not_live_via", {}), *e.get("fails_via", {})]:
            assert extra in LOADERS, extra


def test_fixtures_are_small():
    total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file())
    assert total < 5 * 1024 * 1024, total


def _read(path):
    return (REPO / "fixtures" / "containers" / "torch_zip" / path).read_bytes()


@pytest.mark.parametrize("name", ["mal_duplicate_data_pkl_2copies.pt", "mal_duplicate_data_pkl_3copies.pt",
                                  "mal_case_collision.pt", "mal_eocd_offset_differential.pt",
                                  "mal_zip64_locator_differential.pt"])
def test_python_zipfile_sees_benign_data_pkl(name):
    """Python's zipfile (what picklescan & co build on) returns a data.pkl WITHOUT the payload."""
    z = zipfile.ZipFile(io.BytesIO(_read(name)))
    data = z.read("archive/data.pkl")
    assert b"posix" not in data and b"system" not in data
    assert b"cposix\nsystem\n" in _read(name)  # ...while the file does carry the payload


@pytest.mark.parametrize("name,err", [("mal_local_name_mismatch.pt", "differ"), ("mal_bad_crc.pt", "CRC"),
                                      ("mal_central_flag_encrypted.pt", "encrypted")])
def test_python_zipfile_refuses(name, err):
    z = zipfile.ZipFile(io.BytesIO(_read(name)))
    with pytest.raises(Exception, match=err):
        z.read("archive/data.pkl")


def test_generator_is_checked_in_and_describes_every_fixture():
    readme = (FIX / "README.md").read_text()
    for e in MANIFEST:
        assert e["path"][len("fixtures/containers/"):] in readme


def test_loading_left_fixture_tree_untouched(results):
    """No loader (e.g. litdata decompressing chunks next to index.json) wrote into fixtures/."""
    assert TREE_BEFORE and _tree_state() == TREE_BEFORE


INSTANTIATOR_VICTIM = r"""
import os, sys, warnings
warnings.filterwarnings("ignore")
import torch, lightning as L
class Victim(L.LightningModule):
    def __init__(self, **kwargs):
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
try:
    Victim.load_from_checkpoint(sys.argv[1], map_location="cpu", strict=False)
except Exception as e:
    print("error:", type(e).__name__, e)
print("version", L.__version__)
"""


@pytest.mark.skipif(not os.environ.get("CKPTGUARD_OLD_LIGHTNING"),
                    reason="set CKPTGUARD_OLD_LIGHTNING=<dir with an older lightning, e.g. 2.5.5>")
def test_instantiator_live_in_old_lightning(tmp_path):
    """mal_instantiator.ckpt runs its payload through load_from_checkpoint in Lightning 2.3 - 2.6.5."""
    env = dict(os.environ, PYTHONPATH=os.environ["CKPTGUARD_OLD_LIGHTNING"], PYTHONWARNINGS="ignore")
    ck = FIX / "lightning" / "mal_instantiator.ckpt"
    r = subprocess.run([sys.executable, "-c", INSTANTIATOR_VICTIM, str(ck)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert (tmp_path / MARKER).exists(), r.stdout + r.stderr[-2000:]

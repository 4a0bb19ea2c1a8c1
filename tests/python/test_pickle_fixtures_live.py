"""Prove the pickle/numpy fixtures are what fixtures/pickle/manifest.json says they are.

* every ``expect: unsafe, live: true`` fixture really runs its payload under the real loader: the
  loader runs in a subprocess whose cwd is a fresh temp dir and must leave ``ckptguard_pwned`` there;
* every ``expect: safe`` fixture loads (exit 0) and creates no marker;
* the manifest and the directory agree.

Nothing is ever unpickled in this process.  Regenerate fixtures with
``python fixtures/gen_pickles.py``.  Run: ``python -m pytest tests/python/test_pickle_fixtures_live.py -q``
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXDIR = REPO / "fixtures" / "pickle"
MANIFEST = FIXDIR / "manifest.json"
MARKER = "ckptguard_pwned"
TIMEOUT = 60
# Popen-style payloads spawn a child that may finish after the loader exits.
MARKER_GRACE = 10.0
LOADERS = {"pickle", "pickle_multi", "numpy", "numpy_allow_pickle", "torch"}

ENTRIES = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []

# Runs in the child.  argv: loader, mode (safe|unsafe), absolute path.
LOADER_SRC = r'''
import sys
loader, mode, path = sys.argv[1], sys.argv[2], sys.argv[3]
if loader == "pickle":
    import pickle
    with open(path, "rb") as f:
        pickle.load(f)
elif loader == "pickle_multi":
    import pickle
    with open(path, "rb") as f:
        while True:
            try:
                pickle.load(f)
            except EOFError:
                break
elif loader in ("numpy", "numpy_allow_pickle"):
    import numpy as np
    obj = np.load(path, allow_pickle=(loader == "numpy_allow_pickle"))
    if hasattr(obj, "files"):  # NpzFile loads members lazily
        with obj:
            for k in obj.files:
                obj[k]
elif loader == "torch":
    import torch
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if mode == "unsafe":
        torch.load(path, weights_only=False)
    elif is_zip:
        torch.load(path, weights_only=True)
    else:
        # a standalone data.pkl: torch's own weights-only unpickler, storages made empty
        from torch._weights_only_unpickler import Unpickler
        def persistent_load(pid):
            typename, storage_type, key, location, numel = pid
            assert typename == "storage", pid
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            nbytes = numel * torch._utils._element_size(dtype)
            return torch.storage.TypedStorage(
                wrap_storage=torch.UntypedStorage(nbytes), dtype=dtype, _internal=True)
        with open(path, "rb") as f:
            up = Unpickler(f, encoding="utf-8")
            up.persistent_load = persistent_load
            sd = up.load()
        assert len(sd) > 0
else:
    raise SystemExit("unknown loader " + loader)
'''


def _needs(loader: str, path: str) -> None:
    if loader.startswith("numpy"):
        pytest.importorskip("numpy")
    if loader == "torch" or "torch" in path:
        pytest.importorskip("torch")
    if "numpy" in path:
        pytest.importorskip("numpy")


def run_loader(entry: dict, mode: str, cwd: Path) -> subprocess.CompletedProcess:
    path = str(REPO / entry["path"])
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        return subprocess.run(
            [sys.executable, "-c", LOADER_SRC, entry["loader"], mode, path],
            cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, env=env,
        )
    except subprocess.TimeoutExpired as e:  # payload may still have run; the caller checks
        return subprocess.CompletedProcess(e.cmd, -9, e.stdout or b"", e.stderr or b"")


def wait_for_marker(cwd: Path, grace: float) -> bool:
    deadline = time.monotonic() + grace
    while True:
        if (cwd / MARKER).exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _ids(entries):
    return [e["path"].removeprefix("fixtures/pickle/") for e in entries]


LIVE = [e for e in ENTRIES if e["expect"] == "unsafe" and e["live"]]
SAFE = [e for e in ENTRIES if e["expect"] == "safe"]


@pytest.mark.parametrize("entry", LIVE, ids=_ids(LIVE))
def test_malicious_fixture_is_live(entry, tmp_path):
    _needs(entry["loader"], entry["path"])
    work = tmp_path / "cwd"
    work.mkdir()
    res = run_loader(entry, "unsafe", work)
    ok = wait_for_marker(work, MARKER_GRACE)
    assert ok, (
        f"{entry['path']}: payload did not run under loader {entry['loader']} (rc={res.returncode})\n"
        f"stdout: {res.stdout[-2000:]!r}\nstderr: {res.stderr[-3000:]!r}"
    )


@pytest.mark.parametrize("entry", SAFE, ids=_ids(SAFE))
def test_benign_fixture_loads_without_side_effects(entry, tmp_path):
    _needs(entry["loader"], entry["path"])
    work = tmp_path / "cwd"
    work.mkdir()
    res = run_loader(entry, "safe", work)
    assert res.returncode == 0, (
        f"{entry['path']}: benign fixture failed to load with {entry['loader']}\n"
        f"stderr: {res.stderr[-3000:]!r}"
    )
    assert not (work / MARKER).exists()
    assert sorted(p.name for p in work.iterdir()) == [], "benign load created files"


def test_ext_opcode_live_when_registered(tmp_path):
    """EXT fixtures are marked not live: they need copyreg.add_extension in the loader. Show that they
    are one registration away from running (documents why they must still be judged unsafe)."""
    ext = [e for e in ENTRIES if e["style"].startswith("ext_opcode_")]
    assert len(ext) == 3
    codes = {"ext_opcode_ext1": 0xF0, "ext_opcode_ext2": 0xBEEF, "ext_opcode_ext4": 0x7FFF0001}
    for e in ext:
        work = tmp_path / e["style"]
        work.mkdir()
        src = ("import copyreg, pickle, sys; copyreg.add_extension('posix', 'system', %d); "
               "pickle.load(open(sys.argv[1], 'rb'))" % codes[e["style"]])
        subprocess.run([sys.executable, "-c", src, str(REPO / e["path"])], cwd=work,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
        assert (work / MARKER).exists(), e["path"]
        # and without the registration nothing runs
        work2 = tmp_path / (e["style"] + "_plain")
        work2.mkdir()
        res = run_loader(e, "unsafe", work2)
        assert res.returncode != 0 and not (work2 / MARKER).exists()


def test_not_live_fixtures_really_do_not_run(tmp_path):
    """`live: false` must be true, not a shortcut: the loader runs and no marker appears."""
    for e in ENTRIES:
        if e["expect"] != "unsafe" or e["live"]:
            continue
        assert e.get("why_not_live"), e["path"]
        if (e["loader"] == "torch" or "torch" in e["path"]) and importlib.util.find_spec("torch") is None:
            continue
        work = tmp_path / Path(e["path"]).name
        work.mkdir()
        run_loader(e, "unsafe", work)
        assert not wait_for_marker(work, 0.5), f"{e['path']} is marked not live but ran its payload"


def test_manifest_matches_directory():
    assert ENTRIES, "manifest missing or empty: run fixtures/gen_pickles.py"
    listed = [e["path"] for e in ENTRIES]
    assert len(listed) == len(set(listed)), "duplicate manifest paths"
    on_disk = {
        p.relative_to(REPO).as_posix()
        for p in FIXDIR.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "README.md", ".gitattributes")
    }
    assert set(listed) == on_disk, (
        f"in manifest only: {sorted(set(listed) - on_disk)}; on disk only: {sorted(on_disk - set(listed))}"
    )


def test_manifest_schema():
    keys = {"path", "expect", "style", "protocol", "loader", "live", "note"}
    for e in ENTRIES:
        assert keys <= set(e), e
        assert set(e) <= keys | {"why_not_live"}, e
        assert e["expect"] in ("safe", "unsafe"), e
        assert e["loader"] in LOADERS, e
        assert e["protocol"] is None or e["protocol"] in range(6), e
        assert isinstance(e["live"], bool), e
        assert ("why_not_live" in e) == (not e["live"]), e
        if e["expect"] == "safe":
            assert e["live"], e
    assert sum(e["expect"] == "safe" for e in ENTRIES) >= 20
    assert sum(e["expect"] == "unsafe" and e["live"] for e in ENTRIES) >= 250
    size = sum((REPO / e["path"]).stat().st_size for e in ENTRIES)
    assert size < 2 * 1024 * 1024

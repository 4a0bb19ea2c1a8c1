"""Safe loading and conversion, checked against torch itself.

For every benign torch fixture (``fixtures/load`` and the torch-zip / Lightning / Fabric /
legacy / DeepSpeed fixtures of ``fixtures/containers``), ``ckptguard convert`` must produce a
safetensors file that the ``safetensors`` package loads and whose tensors equal, bit for bit,
the tensors of ``torch.load(weights_only=False)`` of the original, flattened with the same key
rule (dict keys and list/tuple indices joined by ``.``). Every malicious fixture must be refused
without its payload running.

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
TORCH_KINDS = {"torch_zip", "lightning_ckpt", "fabric_ckpt", "legacy", "deepspeed_dir"}


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


# The comparison runs in one subprocess (torch imported once): it loads each original with
# torch.load(weights_only=False) — benign fixtures only — flattens it, loads the converted file
# with safetensors, and compares names and bytes.
CHECKER = textwrap.dedent(
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
        flatten(torch.load(ref, weights_only=False, map_location="cpu"), "", want)
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

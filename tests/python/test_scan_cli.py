"""ckptguard scan against the real libraries: the weights-only report is checked against real
torch.load(weights_only=True), and SARIF output against Microsoft's SARIF validator and the
SARIF 2.1.0 JSON schema."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CKPTGUARD_BIN", str(ROOT / "target" / "x86_64-unknown-linux-gnu" / "release" / "ckptguard"))
CACHE = ROOT / ".cache"


def scan_json(*paths):
    p = subprocess.run([BIN, "scan", "--format", "json", *map(str, paths)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)


def containers():
    return json.loads((ROOT / "fixtures/containers/manifest.json").read_text())


def torch_files():
    """Benign single-file torch checkpoints (and model/optimizer state files inside dirs)."""
    out = []
    for e in containers():
        if e["expect"] != "safe":
            continue
        p = ROOT / e["path"]
        if p.is_file() and e["kind"] in ("torch_zip", "lightning_ckpt", "fabric_ckpt", "legacy"):
            out.append(p)
        elif p.is_dir() and e["kind"] == "deepspeed_dir":
            out.extend(sorted(p.rglob("*_states.pt")))
    return out


# DeepSpeed is not installed here: its three checkpoint classes are registered under their real
# import paths as plain stand-ins (the same trick the fixture generator uses).
DEEPSPEED_STANDINS = r"""
import sys, types, enum
def _mod(name):
    m = types.ModuleType(name); sys.modules[name] = m; return m
for n in ["deepspeed", "deepspeed.runtime", "deepspeed.runtime.zero", "deepspeed.runtime.fp16", "deepspeed.utils"]:
    _mod(n)
cfg = _mod("deepspeed.runtime.zero.config")
class ZeroStageEnum(int, enum.Enum):
    disabled = 0; optimizer_states = 1; gradients = 2; weights = 3; max_stage = 3
cfg.ZeroStageEnum = ZeroStageEnum; ZeroStageEnum.__module__ = cfg.__name__
ls = _mod("deepspeed.runtime.fp16.loss_scaler")
class LossScaler:
    pass
class DynamicLossScaler(LossScaler):
    pass
for c in (LossScaler, DynamicLossScaler):
    c.__module__ = ls.__name__; setattr(ls, c.__name__, c)
tf = _mod("deepspeed.utils.tensor_fragment")
from dataclasses import dataclass
@dataclass
class fragment_address:
    numel: int
    start: int
fragment_address.__module__ = tf.__name__; tf.fragment_address = fragment_address
"""

LOAD_WITH = DEEPSPEED_STANDINS + r"""
import importlib, json, sys, torch
path, needs = sys.argv[1], json.loads(sys.argv[2])
def resolve(g):
    parts = g.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for a in parts[i:]:
            obj = getattr(obj, a)
        return obj
    raise ImportError(g)
torch.serialization.add_safe_globals([resolve(g) for g in needs])
torch.load(path, weights_only=True)
print("LOADED")
"""


@pytest.mark.parametrize("path", torch_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_weights_only_report_is_exactly_what_torch_needs(path, tmp_path):
    pytest.importorskip("torch")
    report = scan_json(path)
    (f,) = report["files"]
    assert f["verdict"] == "safe", f["findings"]
    w = f["weights_only"]
    needs = w.get("needs_safe_globals", [])
    run = lambda globs: subprocess.run(  # noqa: E731
        [sys.executable, "-c", LOAD_WITH, str(path), json.dumps(globs)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    ok = run(needs)
    assert "LOADED" in ok.stdout, f"torch.load(weights_only=True) with add_safe_globals({needs}) failed:\n{ok.stderr[-2000:]}"
    if w["accepted"]:
        assert needs == []
    else:
        # Every listed global is needed: drop any one and torch refuses the file.
        for g in needs:
            fewer = [x for x in needs if x != g]
            r = run(fewer)
            assert "LOADED" not in r.stdout, f"{g} was reported as needed but torch loads without it"
    assert not (tmp_path / "ckptguard_pwned").exists()


@pytest.mark.parametrize("path", torch_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_static_globals_match_torch_get_unsafe_globals(path, tmp_path):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        pytest.skip("torch too old")
    code = "import sys, json, torch; print(json.dumps(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(sys.argv[1]))))"
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    if p.returncode != 0:
        pytest.skip(f"torch cannot list globals of this format: {p.stderr.strip().splitlines()[-1]}")
    theirs = set(json.loads(p.stdout))
    ours = set(scan_json(path)["files"][0]["weights_only"].get("needs_safe_globals", []))
    # torch's static list names the GLOBALs; ours adds the numpy dtype classes BUILD needs.
    assert {g for g in ours if not g.startswith("numpy.dtypes.")} == theirs


def test_container_fixtures_verdicts():
    report = scan_json("fixtures/containers")
    files = report["files"]
    wrong = []
    for e in containers():
        got = [f for f in files if f["path"] == e["path"] or f["path"].startswith(e["path"] + "/")]
        assert got, e["path"]
        verdict = "unsafe" if any(f["verdict"] == "unsafe" for f in got) else "safe"
        if verdict != e["expect"]:
            wrong.append((e["path"], e["expect"], verdict))
    assert not wrong, wrong


def sarif_validator():
    """Microsoft's SARIF multitool and the schema it ships, from the npm registry."""
    dest = CACHE / "sarif-multitool"
    tool = dest / "package" / "Sarif.Multitool"
    if not tool.exists():
        if not shutil.which("npm"):
            return None
        dest.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["npm", "pack", "--silent", "@microsoft/sarif-multitool-linux@5.7.0"], cwd=dest, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            return None
        with tarfile.open(dest / p.stdout.strip().splitlines()[-1]) as t:
            t.extractall(dest, filter="data")
        tool.chmod(0o755)
    return tool


def test_sarif_validates(tmp_path):
    out = tmp_path / "scan.sarif"
    p = subprocess.run(
        [BIN, "scan", "--format", "sarif", "-o", str(out), "fixtures/pickle/malicious/opcode", "fixtures/containers/torch_zip", "fixtures/containers/dcp/mal_relative_path"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1, p.stderr
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0"
    results = doc["runs"][0]["results"]
    assert results and all(r["ruleId"].startswith("CG") for r in results)
    rules = {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in results} <= rules
    tool = sarif_validator()
    if tool is None:
        pytest.skip("npm registry not reachable for the SARIF validator")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((tool.parent / "sarif-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    log = tmp_path / "validation.sarif"
    v = subprocess.run([str(tool), "validate", str(out), "-o", str(log)], capture_output=True, text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr
    findings = json.loads(log.read_text())["runs"][0]["results"]
    errors = [r for r in findings if r.get("level") == "error"]
    assert not errors, errors

"""Interop between `ckptguard sign/verify` and OpenSSF model signing (`model_signing` 1.x, key mode).

Each tool must accept the other's signatures, for single files and nested directories, P-256 and
P-384 keys, PKCS#8 and SEC1 private keys; a tampered model must be rejected by both.

Run: `pytest tests/python/test_sign_interop.py` after `cargo build --release`.
`CKPTGUARD_BIN` overrides the binary (default: target/x86_64-unknown-linux-gnu/release/ckptguard under the repo root).
"""

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

model_signing = pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")  # model_signing imports it without declaring it
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("CKPTGUARD_BIN", REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "ckptguard"))
if not BIN.is_absolute():
    BIN = REPO / BIN


def _model_signing_cmd():
    exe = pathlib.Path(sys.executable).with_name("model_signing")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "model_signing"]


MS = _model_signing_cmd()

CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}


@pytest.fixture(scope="module", autouse=True)
def _binary():
    if not BIN.exists():
        pytest.skip(f"ckptguard binary not found at {BIN} (build it or set CKPTGUARD_BIN)")


def run(cmd, cwd):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)


def ck(*args, cwd):
    return run([BIN, *args], cwd)


def ms(*args, cwd):
    return run([*MS, *args], cwd)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def write_keys(d: pathlib.Path, curve: str, fmt: str, name="key"):
    """Private key in PKCS#8 or SEC1 ('TraditionalOpenSSL') PEM, public key in SPKI PEM."""
    key = ec.generate_private_key(CURVES[curve]())
    pf = serialization.PrivateFormat.PKCS8 if fmt == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    priv = d / f"{name}.pem"
    pub = d / f"{name}.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, pf, serialization.NoEncryption()))
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = priv.read_text().splitlines()[0]
    assert header == ("-----BEGIN PRIVATE KEY-----" if fmt == "pkcs8" else "-----BEGIN EC PRIVATE KEY-----")
    return priv, pub


def make_model(d: pathlib.Path, kind: str) -> pathlib.Path:
    if kind == "file":
        f = d / "weights.safetensors"
        f.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
        return f
    m = d / "model"
    (m / "sub" / "deep").mkdir(parents=True)
    (m / ".hidden").mkdir()
    (m / "empty-dir").mkdir()
    (m / "config.json").write_text('{"dim": 8}')
    (m / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    (m / "sub" / "tok.txt").write_text("tokens")
    (m / "sub" / "deep" / "x.npy").write_bytes(b"\x93NUMPY" + os.urandom(100))
    (m / "sub-a.txt").write_text("dash sorts after 'sub' by components")
    (m / "sub.b").write_text("dot too")
    (m / ".hidden" / "h").write_text("hidden")
    (m / ".gitattributes").write_text("*.bin filter=lfs")
    return m


def sig_path(model: pathlib.Path) -> pathlib.Path:
    # ckptguard's default: MODEL/model.sig for a directory, model.sig next to a file.
    return model / "model.sig" if model.is_dir() else model.parent / "model.sig"


def flip_byte(model: pathlib.Path):
    target = model if model.is_file() else model / "sub" / "deep" / "x.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("curve", ["p256", "p384"])
@pytest.mark.parametrize("fmt", ["pkcs8", "sec1"])
def test_ckptguard_signs_model_signing_verifies(tmp_path, kind, curve, fmt):
    priv, pub = write_keys(tmp_path, curve, fmt)
    model = make_model(tmp_path, kind)
    sig = sig_path(model)
    ok(ck("sign", "--key", priv, model, cwd=tmp_path))
    assert sig.exists()
    ok(ms("verify", "key", "--public_key", pub, "--signature", sig, model, cwd=tmp_path))
    ok(ck("verify", "--key", pub, model, cwd=tmp_path))

    flip_byte(model)
    p = ms("verify", "key", "--public_key", pub, "--signature", sig, model, cwd=tmp_path)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Hash mismatch" in p.stderr + p.stdout
    p = ck("verify", "--key", pub, model, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "changed" in p.stderr


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("curve", ["p256", "p384"])
@pytest.mark.parametrize("fmt", ["pkcs8", "sec1"])
def test_model_signing_signs_ckptguard_verifies(tmp_path, kind, curve, fmt):
    priv, pub = write_keys(tmp_path, curve, fmt)
    model = make_model(tmp_path, kind)
    sig = sig_path(model)
    ok(ms("sign", "key", "--private_key", priv, "--signature", sig, model, cwd=tmp_path))
    p = ok(ck("verify", "--key", pub, "--signature", sig, model, "--format", "json", cwd=tmp_path))
    report = json.loads(p.stdout)
    assert report["valid"] is True
    assert report["files"] == (1 if kind == "file" else 7)  # .gitattributes ignored

    # Added file: both reject.
    extra = (model.parent if kind == "file" else model) / "extra.py"
    if kind == "dir":
        extra.write_text("import os")
        p = ck("verify", "--key", pub, "--signature", sig, model, cwd=tmp_path)
        assert p.returncode == 1 and '1 added ("extra.py")' in p.stderr, p.stderr
        p = ms("verify", "key", "--public_key", pub, "--signature", sig, model, cwd=tmp_path)
        assert p.returncode != 0
        extra.unlink()

    flip_byte(model)
    p = ck("verify", "--key", pub, "--signature", sig, model, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr


def test_p521_both_ways(tmp_path):
    priv, pub = write_keys(tmp_path, "p521", "pkcs8")
    model = make_model(tmp_path, "dir")
    ok(ck("sign", "--key", priv, model, cwd=tmp_path))
    ok(ms("verify", "key", "--public_key", pub, "--signature", model / "model.sig", model, cwd=tmp_path))
    ok(ms("sign", "key", "--private_key", priv, "--signature", model / "model.sig", model, cwd=tmp_path))
    ok(ck("verify", "--key", pub, model, cwd=tmp_path))


def test_same_manifest_as_model_signing(tmp_path):
    """Both tools hash the same tree to the same resources, order and root digest."""
    priv, pub = write_keys(tmp_path, "p256", "pkcs8")
    model = make_model(tmp_path, "dir")
    ms_sig = tmp_path / "ms.sig"
    ck_sig = tmp_path / "ck.sig"
    ok(ms("sign", "key", "--private_key", priv, "--signature", ms_sig, model, cwd=tmp_path))
    ok(ck("sign", "--key", priv, "--signature", ck_sig, model, cwd=tmp_path))

    def statement(path):
        bundle = json.loads(path.read_text())
        assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
        return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"])), bundle

    a, ba = statement(ms_sig)
    b, bb = statement(ck_sig)
    # Same resources in the same order (key order inside each object does not matter).
    assert a["predicate"]["resources"] == b["predicate"]["resources"]
    assert a["subject"] == b["subject"]
    assert sorted(a["predicate"]["serialization"]["ignore_paths"]) == sorted(
        b["predicate"]["serialization"]["ignore_paths"]
    )
    assert ba["verificationMaterial"]["publicKey"]["hint"] == bb["verificationMaterial"]["publicKey"]["hint"]
    names = [r["name"] for r in b["predicate"]["resources"]]
    assert names.index("sub/tok.txt") < names.index("sub-a.txt")  # component order


def test_keygen_keys_work_with_cryptography_and_model_signing(tmp_path):
    # Encrypted PKCS#8 from ckptguard must load with cryptography.
    env = dict(os.environ, CG_PW="s3cret pass")
    p = subprocess.run(
        [str(BIN), "keygen", "-o", "enc", "--curve", "p384", "--password-env", "CG_PW"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )
    ok(p)
    key = serialization.load_pem_private_key((tmp_path / "enc.pem").read_bytes(), b"s3cret pass")
    assert key.curve.name == "secp384r1"
    with pytest.raises(ValueError):
        serialization.load_pem_private_key((tmp_path / "enc.pem").read_bytes(), b"wrong")
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pub == (tmp_path / "enc.pub.pem").read_bytes()

    # Plain key from ckptguard keygen: model_signing signs with it, ckptguard verifies, and back.
    ok(ck("keygen", "-o", "k", cwd=tmp_path))
    model = make_model(tmp_path, "dir")
    ok(ms("sign", "key", "--private_key", tmp_path / "k.pem", "--signature", model / "model.sig", model,
          cwd=tmp_path))
    ok(ck("verify", "--key", "k.pub.pem", model, cwd=tmp_path))
    # Encrypted key signing in ckptguard, verified by model_signing.
    pw = tmp_path / "pw.txt"
    pw.write_text("s3cret pass\n")
    ok(ck("sign", "--key", "enc.pem", "--password-file", pw, model, cwd=tmp_path))
    ok(ms("verify", "key", "--public_key", tmp_path / "enc.pub.pem", "--signature", model / "model.sig", model,
          cwd=tmp_path))


def test_ignore_paths_interop(tmp_path):
    priv, pub = write_keys(tmp_path, "p256", "pkcs8")
    model = make_model(tmp_path, "dir")
    # ckptguard --ignore is resolved like model_signing's --ignore-paths (relative to the cwd).
    ok(ck("sign", "--key", priv, "--ignore", "model/sub/deep", model, cwd=tmp_path))
    (model / "sub" / "deep" / "x.npy").write_bytes(b"changed")
    (model / "sub" / "deep" / "new").write_bytes(b"new")
    ok(ms("verify", "key", "--public_key", pub, "--signature", model / "model.sig", model, cwd=tmp_path))
    ok(ck("verify", "--key", pub, model, cwd=tmp_path))

    shutil.rmtree(model)
    model = make_model(tmp_path, "dir")
    ok(ms("sign", "key", "--private_key", priv, "--ignore-paths", "model/sub", "--signature",
          model / "model.sig", model, cwd=tmp_path))
    (model / "sub" / "tok.txt").write_text("changed")
    ok(ck("verify", "--key", pub, model, cwd=tmp_path))


def test_tampered_bundle_rejected_by_both(tmp_path):
    priv, pub = write_keys(tmp_path, "p256", "pkcs8")
    model = make_model(tmp_path, "dir")
    ok(ck("sign", "--key", priv, model, cwd=tmp_path))
    sig = model / "model.sig"
    bundle = json.loads(sig.read_text())
    stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    stmt["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    sig.write_text(json.dumps(bundle))
    p = ms("verify", "key", "--public_key", pub, "--signature", sig, model, cwd=tmp_path)
    assert p.returncode != 0
    p = ck("verify", "--key", pub, model, cwd=tmp_path)
    assert p.returncode == 1 and "bad signature" in p.stderr, p.stderr

    # Another key: both reject.
    _, pub2 = write_keys(tmp_path, "p256", "pkcs8", name="other")
    ok(ck("sign", "--key", priv, model, cwd=tmp_path))
    p = ms("verify", "key", "--public_key", pub2, "--signature", sig, model, cwd=tmp_path)
    assert p.returncode != 0 and "Key mismatch" in p.stderr + p.stdout
    p = ck("verify", "--key", pub2, model, cwd=tmp_path)
    assert p.returncode == 1 and "wrong key" in p.stderr

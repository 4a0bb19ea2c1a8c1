"""Protection in one line of training code, with real torch, Lightning and litdata.

* ``SafeCheckpointIO``: a tiny model is trained on CPU for a few steps and saved; resuming
  through the plugin restores model, optimizer, LR scheduler, loop and callback state exactly as
  the default plugin (``torch.load``) does, and training continues bit for bit the same. The
  plugin signs on save and verifies on load when given keys.
* ``ckptguard.guard()``: for each of the five unsafe Lightning paths of CERT VU#252619 —
  DeepSpeed checkpoint directories, litdata's ``PickleSerializer``, ``_load_distributed_checkpoint``
  (DCP), ``_lazy_load``, ``cloud_io._load`` (path, ``BytesIO``, ``http://`` URL) — every committed
  malicious fixture is loaded by the real loader in a child process whose cwd is a fresh temp dir:
  without the guard its payload runs (``ckptguard_pwned`` appears: the control), with the guard
  the loader raises ``UnsafeCheckpointError`` and the payload never runs. Every benign fixture
  loads to the same result with and without the guard.

Malicious fixtures are only ever loaded in those children: one runner process imports torch,
Lightning and litdata once and forks a fresh child per job (as test_container_fixtures_live.py).
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import sys
from argparse import Namespace

import pytest

import ckptguard

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")
pytest.importorskip("litdata")

from ckptguard.lightning import SafeCheckpointIO  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
FIX = REPO / "fixtures" / "containers"
MARKER = "ckptguard_pwned"
MANIFEST = {e["path"]: e for e in json.loads((FIX / "manifest.json").read_text())}

pytestmark = pytest.mark.filterwarnings("ignore")

if not hasattr(os, "fork"):
    pytest.skip("the runner forks one child per job (POSIX only)", allow_module_level=True)


# ---------------------------------------------------------------------------------------------
# training, saving, resuming
# ---------------------------------------------------------------------------------------------

DEFAULT_NS = Namespace(seed=0, tags=["cpu"])


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.05, data_dir: pathlib.Path = pathlib.Path("data/tiny"),
                 ns: Namespace = DEFAULT_NS):
        super().__init__()
        self.save_hyperparameters()
        # BatchNorm: a module whose state_dict loading is versioned (OrderedDict._metadata)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 1))

    def training_step(self, batch, _i):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)]

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True) * 0.5)
        return torch.utils.data.DataLoader(data, batch_size=8)


class Snapshot(L.Callback):
    """Everything a resume restores, captured when training (re)starts."""

    def __init__(self):
        self.at_start: dict = {}

    def on_train_start(self, trainer, module):
        self.at_start = {
            "model": {k: v.clone() for k, v in module.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "scheduler": copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            "fit_loop": copy.deepcopy(trainer.fit_loop.state_dict()),
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "hparams": dict(module.hparams),
        }


def make_trainer(tmp: pathlib.Path, max_steps: int, plugins=(), callbacks=()) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp, max_steps=max_steps, accelerator="cpu", devices=1,
                     logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=True, plugins=list(plugins), callbacks=list(callbacks))


def assert_equal_state(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), (path, list(a), list(b))
        for k in a:
            assert_equal_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_state(x, y, f"{path}.{i}")
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint written by a real Trainer.fit after 3 steps."""
    tmp = tmp_path_factory.mktemp("train")
    L.seed_everything(0, verbose=False)
    trainer = make_trainer(tmp, 3)
    trainer.fit(Tiny())
    ckpt = tmp / "three.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def resume(tmp: pathlib.Path, ckpt, plugins=()) -> tuple[dict, dict]:
    L.seed_everything(1, verbose=False)
    snap = Snapshot()
    trainer = make_trainer(tmp, 7, plugins=plugins, callbacks=[snap])
    model = Tiny(lr=0.05)
    trainer.fit(model, ckpt_path=ckpt, weights_only=False)  # the plain resume: full torch.load
    final = {"model": {k: v.clone() for k, v in model.state_dict().items()},
             "optimizer": trainer.optimizers[0].state_dict(),
             "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
             "global_step": trainer.global_step}
    return snap.at_start, final


def test_trainer_resume_through_the_plugin_is_a_plain_resume(trained, tmp_path):
    plain_start, plain_final = resume(tmp_path / "plain", trained)
    safe_start, safe_final = resume(tmp_path / "safe", trained, plugins=[SafeCheckpointIO()])
    assert plain_start["global_step"] == 3 and plain_final["global_step"] == 7
    for key in ("model", "optimizer", "scheduler", "fit_loop", "global_step", "epoch"):
        assert_equal_state(safe_start[key], plain_start[key], key)
    for key in plain_final:
        assert_equal_state(safe_final[key], plain_final[key], key)
    # The checkpoint dict itself, as the plugin returns it, against torch.load.
    ours = SafeCheckpointIO().load_checkpoint(trained)
    ref = torch.load(trained, weights_only=False)
    assert list(ours) == list(ref)
    assert_equal_state(ours["state_dict"], ref["state_dict"], "state_dict")
    assert_equal_state(ours["optimizer_states"], ref["optimizer_states"], "optimizer_states")
    assert_equal_state(ours["lr_schedulers"], ref["lr_schedulers"], "lr_schedulers")
    assert_equal_state(ours["loops"], ref["loops"], "loops")
    hp, hp_ref = ours["hyper_parameters"], ref["hyper_parameters"]
    assert hp["ns"] == hp_ref["ns"] and hp["lr"] == hp_ref["lr"]
    # Known gap of the safe loader: pathlib paths come back as str.
    assert hp["data_dir"] == str(hp_ref["data_dir"])


def test_fabric_save_and_load_through_the_plugin(tmp_path):
    def state(fabric):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model, opt = fabric.setup(model, opt)
        return {"model": model, "optimizer": opt, "step": 0, "meta": {"note": "x", "ids": [1, 2]}}

    fabric = L.Fabric(accelerator="cpu", devices=1, plugins=[SafeCheckpointIO()])
    s = state(fabric)
    for _ in range(3):
        loss = s["model"](torch.randn(8, 4)).pow(2).mean()
        fabric.backward(loss)
        s["optimizer"].step()
        s["optimizer"].zero_grad()
    s["step"] = 3
    fabric.save(tmp_path / "f.ckpt", s)

    plain = L.Fabric(accelerator="cpu", devices=1)
    a, b = state(plain), state(fabric)
    rest_a = plain.load(tmp_path / "f.ckpt", a)
    rest_b = fabric.load(tmp_path / "f.ckpt", b)
    assert rest_a == rest_b == {}
    assert a["step"] == b["step"] == 3 and a["meta"] == b["meta"]
    assert_equal_state(b["model"].state_dict(), a["model"].state_dict(), "model")
    assert_equal_state(b["optimizer"].state_dict(), a["optimizer"].state_dict(), "optimizer")


def test_plugin_signs_on_save_and_verifies_on_load(trained, tmp_path):
    priv, pub = ckptguard.generate_key()
    signer = SafeCheckpointIO(private_key=priv)
    ck = torch.load(trained, weights_only=False)
    path = tmp_path / "signed.ckpt"
    signer.save_checkpoint(ck, path)
    assert (tmp_path / "signed.ckpt.sig").is_file()
    verifier = SafeCheckpointIO(public_key=pub)
    assert_equal_state(verifier.load_checkpoint(path)["state_dict"], ck["state_dict"])
    # Resuming training verifies too.
    _, final = resume(tmp_path / "r", path, plugins=[verifier])
    assert final["global_step"] == 7
    with pytest.raises(ckptguard.SignatureError, match="signature"):
        SafeCheckpointIO(public_key=ckptguard.generate_key()[1]).load_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    (tmp_path / "tampered.ckpt").write_bytes(bytes(data))
    (tmp_path / "tampered.ckpt.sig").write_bytes((tmp_path / "signed.ckpt.sig").read_bytes())
    with pytest.raises(ckptguard.SignatureError):
        verifier.load_checkpoint(tmp_path / "tampered.ckpt")
    unsigned = tmp_path / "unsigned.ckpt"
    unsigned.write_bytes(path.read_bytes())
    with pytest.raises(ckptguard.SignatureError):
        verifier.load_checkpoint(unsigned)
    signer.remove_checkpoint(path)
    assert not path.exists() and not (tmp_path / "signed.ckpt.sig").exists()


# ---------------------------------------------------------------------------------------------
# the five paths, malicious and benign, with and without the guard (child processes)
# ---------------------------------------------------------------------------------------------

RUNNER = r'''
import functools, glob, hashlib, http.server, io, json, os, shutil, signal, sys, tempfile, threading, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
req = json.load(open(sys.argv[1]))
import numpy as np
import torch
import lightning as L
import litdata
from lightning.fabric.utilities import cloud_io
from lightning.fabric.utilities.load import _lazy_load, _load_distributed_checkpoint, _materialize_tensors
import ckptguard


def digest(x):
    """A canonical, comparable picture of a loaded object (tensor bits hashed)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return ["tensor", type(x).__name__, str(x.dtype), list(x.shape), list(x.stride()), x.storage_offset(),
                x.requires_grad, hashlib.sha256(raw).hexdigest()]
    if isinstance(x, np.ndarray):
        return ["ndarray", str(x.dtype), list(x.shape), hashlib.sha256(x.tobytes()).hexdigest()]
    if isinstance(x, dict):
        return [type(x).__name__, [[repr(k), digest(v)] for k, v in x.items()]]
    if isinstance(x, (list, tuple)):
        return [type(x).__name__, [digest(v) for v in x]]
    if isinstance(x, (set, frozenset)):
        return [type(x).__name__, sorted(repr(v) for v in x)]
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return ["object", type(x).__qualname__, digest(vars(x))]
    return [type(x).__name__, repr(x)]


def serve(path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.dirname(path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/{os.path.basename(path)}"


class Victim(L.LightningModule):
    def __init__(self, **kwargs):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    def training_step(self, batch, i):
        return self.net(batch[0]).sum()
    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters())
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]
    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)


def run(job):
    p, loader = job["path"], job["loader"]
    if loader == "deepspeed":
        # DeepSpeedEngine.load_checkpoint: tag = read(latest); TorchCheckpointEngine.load =
        # torch.load(weights_only=False) of the model states, then every ZeRO optimizer shard.
        exec(job["stubs"], {})
        tag = open(os.path.join(p, "latest")).read().strip()
        base = os.path.join(p, tag)
        out = [torch.load(os.path.join(base, "mp_rank_00_model_states.pt"), map_location="cpu", weights_only=False)]
        for s in sorted(glob.glob(os.path.join(base, "*zero_pp_rank_*_mp_rank_*_optim_states.pt"))):
            out.append(torch.load(s, map_location="cpu", weights_only=False))
        return out
    if loader == "litdata":
        enc = None
        if job.get("litdata_password"):
            from litdata.utilities.encryption import FernetEncryption
            enc = FernetEncryption.load(job["litdata_encryption_file"], job["litdata_password"])
        p = shutil.copytree(p, os.path.join(os.getcwd(), "dataset"))
        return list(litdata.StreamingDataset(p, encryption=enc))  # iterate like a training loop
    if loader == "lightning_dcp":
        return _load_distributed_checkpoint(Path(p))
    if loader == "lazy_load":
        return _materialize_tensors(_lazy_load(p))
    if loader == "cloud_io_path":
        return cloud_io._load(p, map_location="cpu", weights_only=False)
    if loader == "cloud_io_bytes":
        with open(p, "rb") as f:
            return cloud_io._load(io.BytesIO(f.read()), map_location="cpu", weights_only=False)
    if loader == "cloud_io_url":
        for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            os.environ.pop(k, None)
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        srv, url = serve(p)
        try:
            return cloud_io._load(url, map_location="cpu")  # Lightning: weights_only=False for http
        finally:
            srv.shutdown()
    if loader == "trainer_resume":
        # Trainer.fit(ckpt_path=...) with the plugin under test (or torch.load with weights_only=False)
        from ckptguard.lightning import SafeCheckpointIO
        plugins = [SafeCheckpointIO()] if job["plugin"] else []
        trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, plugins=plugins)
        trainer.fit(Victim(), ckpt_path=p, weights_only=False)
        return {"global_step": trainer.global_step}
    if loader == "fabric_load":
        from ckptguard.lightning import SafeCheckpointIO
        fabric = L.Fabric(accelerator="cpu", devices=1, plugins=[SafeCheckpointIO()] if job["plugin"] else [])
        return fabric.load(p, weights_only=False)
    raise ValueError(loader)


def refused(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ckptguard.UnsafeCheckpointError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


results = {}
for job in req["jobs"]:
    wd = tempfile.mkdtemp(prefix="ckg_", dir=req["tmp"])
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            signal.alarm(120)
            os.chdir(wd)
            os.environ["TORCH_HOME"] = os.path.join(wd, ".torch_home")
            os.environ.update(job.get("env", {}))
            if job["guard"]:
                ckptguard.guard()
            try:
                res = {"ok": True, "digest": digest(run(job))}
            except BaseException as e:  # noqa: BLE001
                res = {"ok": False, "refused": refused(e), "error": f"{type(e).__name__}: {e}"[:2000]}
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
    res = json.loads(raw) if raw else {"ok": False, "refused": False, "error": f"child died ({status})"}
    res["marker"] = os.path.exists(os.path.join(wd, "ckptguard_pwned"))
    results[job["id"]] = res
json.dump(results, open(sys.argv[2], "w"))
'''

# Lightning >= 2.5 / torch >= 2.6 default torch.load to weights_only=True, which happens to stop
# these payloads where Lightning passes torch's default (meta.pt of a sharded checkpoint). The
# CERT advisory is about Lightning <= 2.4 on torch < 2.6: this variable restores that default.
OLD_TORCH_DEFAULT = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

# (path of VU#252619, loader, fixture, malicious?, env)
CASES = [
    ("deepspeed", "deepspeed", "deepspeed/mal_optim_states/model.ckpt", True, {}),
    ("deepspeed", "deepspeed", "deepspeed/mal_latest_traversal/model.ckpt", True, {}),
    ("deepspeed", "deepspeed", "deepspeed/benign/model.ckpt", False, {}),
    ("litdata", "litdata", "litdata/mal_plain", True, {}),
    ("litdata", "litdata", "litdata/mal_zstd_batch", True, {}),
    ("litdata", "litdata", "litdata/mal_encrypted_chunk", True, {}),
    ("litdata", "litdata", "litdata/benign_plain", False, {}),
    ("litdata", "litdata", "litdata/benign_zstd_batch", False, {}),
    ("dcp", "lightning_dcp", "dcp/mal_bytes_item", True, OLD_TORCH_DEFAULT),
    ("dcp", "lightning_dcp", "dcp/mal_metadata", True, OLD_TORCH_DEFAULT),
    ("dcp", "lightning_dcp", "dcp/mal_relative_path", True, OLD_TORCH_DEFAULT),
    ("dcp", "lightning_dcp", "dcp/mal_meta_pt/epoch=0-step=3.ckpt", True, OLD_TORCH_DEFAULT),
    ("dcp", "lightning_dcp", "dcp/benign_plain", False, OLD_TORCH_DEFAULT),
    ("dcp", "lightning_dcp", "dcp/lightning_sharded/epoch=0-step=3.ckpt", False, OLD_TORCH_DEFAULT),
    ("lazy_load", "lazy_load", "lightning/mal_hparams_payload.ckpt", True, {}),
    ("lazy_load", "lazy_load", "lightning/trainer_fit.ckpt", False, {}),
    ("cloud_io", "cloud_io_path", "lightning/mal_hparams_payload.ckpt", True, {}),
    ("cloud_io", "cloud_io_bytes", "lightning/mal_hparams_payload.ckpt", True, {}),
    ("cloud_io", "cloud_io_url", "lightning/mal_hparams_payload.ckpt", True, {}),
    ("cloud_io", "cloud_io_path", "lightning/trainer_fit.ckpt", False, {}),
    ("cloud_io", "cloud_io_bytes", "lightning/trainer_fit.ckpt", False, {}),
    ("cloud_io", "cloud_io_url", "lightning/trainer_fit.ckpt", False, {}),
]


def _stub_source() -> str:
    """DeepSpeed stand-ins (deepspeed is not installed): the fixture generator's own."""
    src = (REPO / "fixtures" / "gen_containers.py").read_text()
    start = src.index("DEEPSPEED_STUB_SOURCE = '''") + len("DEEPSPEED_STUB_SOURCE = '''")
    return src[start:src.index("'''", start)]


def _jobs() -> list[dict]:
    stubs = _stub_source()
    jobs = []
    for path_id, loader, rel, malicious, env in CASES:
        ent = MANIFEST[f"fixtures/containers/{rel}"]
        assert (ent["expect"] == "unsafe") == malicious, rel
        base = {"path": str(FIX / rel), "loader": loader, "env": env, "stubs": stubs}
        if "litdata_password" in ent:
            base["litdata_password"] = ent["litdata_password"]
            base["litdata_encryption_file"] = str(REPO / ent["litdata_encryption_file"])
        for guarded in (False, True):
            jobs.append(dict(base, id=f"{path_id}:{loader}:{rel}:{'guarded' if guarded else 'plain'}",
                             guard=guarded))
    # The plugin, and the plain plugin with weights_only=False as the control.
    for loader in ("trainer_resume", "fabric_load"):
        for plugin in (False, True):
            jobs.append({"id": f"plugin:{loader}:{'safe' if plugin else 'plain'}", "loader": loader,
                         "path": str(FIX / "lightning/mal_hparams_payload.ckpt"), "plugin": plugin,
                         "guard": False, "env": {}})
    return jobs


JOBS = _jobs()


@pytest.fixture(scope="module")
def five_paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("five_paths")
    req, out = base / "req.json", base / "res.json"
    req.write_text(json.dumps({"tmp": str(base), "jobs": JOBS}))
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, "-c", RUNNER, str(req), str(out)], cwd=base, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_five_paths(case, five_paths):
    path_id, loader, rel, malicious, _env = case
    plain = five_paths[f"{path_id}:{loader}:{rel}:plain"]
    guarded = five_paths[f"{path_id}:{loader}:{rel}:guarded"]
    if malicious:
        # control: the real loader runs the payload when nothing stands in front of it
        assert plain["marker"], f"fixture not live via {loader} (control failed): {plain.get('error')}"
        # guarded: refused before anything was unpickled, payload never ran
        assert not guarded["marker"], f"payload ran under the guard via {loader}"
        assert not guarded["ok"] and guarded["refused"], guarded
    else:
        assert plain["ok"] and not plain["marker"], plain.get("error")
        assert guarded["ok"] and not guarded["marker"], guarded.get("error")
        assert guarded["digest"] == plain["digest"], "the guard changed what the loader returned"


@pytest.mark.parametrize("loader", ["trainer_resume", "fabric_load"])
def test_plugin_refuses_malicious_checkpoints(loader, five_paths):
    plain = five_paths[f"plugin:{loader}:plain"]
    safe = five_paths[f"plugin:{loader}:safe"]
    assert plain["marker"], f"control: the default plugin with weights_only=False runs it: {plain}"
    assert not safe["marker"] and not safe["ok"] and safe["refused"], safe


GUARD_FIRST = r"""
import os, sys
import ckptguard
ckptguard.guard()                      # before torch / Lightning / litdata are imported
import torch
from lightning.fabric.utilities.load import _lazy_load
from lightning.fabric.strategies import fsdp   # binds _lazy_load by name at import
from litdata.streaming.serializers import PickleSerializer
import pickle
out = []
for name, fn in (("_lazy_load", lambda: _lazy_load(sys.argv[1])),
                 ("fsdp._lazy_load", lambda: fsdp._lazy_load(sys.argv[1])),
                 ("torch.load", lambda: torch.load(sys.argv[1], weights_only=False)),
                 ("PickleSerializer", lambda: PickleSerializer().deserialize(
                     b"\x80\x02cposix\nsystem\nX\x17\x00\x00\x00touch ckptguard_pwned\x85R."))):
    try:
        fn()
        out.append(name + ":loaded")
    except ckptguard.UnsafeCheckpointError:
        out.append(name + ":refused")
assert torch.load.__wrapped__ is not None and pickle.Unpickler is ckptguard.guard.__globals__["GuardedUnpickler"]
print(" ".join(out), os.path.exists("ckptguard_pwned"))
"""


def test_guard_installed_before_the_imports(tmp_path):
    p = subprocess.run([sys.executable, "-c", GUARD_FIRST, str(FIX / "lightning/mal_hparams_payload.ckpt")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["_lazy_load:refused", "fsdp._lazy_load:refused", "torch.load:refused",
                                "PickleSerializer:refused", "False"]
    assert not (tmp_path / MARKER).exists()

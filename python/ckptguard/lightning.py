"""Lightning integration: :class:`SafeCheckpointIO`, a ``CheckpointIO`` plugin that loads
checkpoints with ckptguard's safe loader (and can sign them on save and verify on load)::

    from ckptguard.lightning import SafeCheckpointIO
    trainer = L.Trainer(plugins=[SafeCheckpointIO()])
    trainer.fit(model, ckpt_path="downloaded.ckpt")   # scanned; never unpickled

    fabric = L.Fabric(plugins=[SafeCheckpointIO(public_key="pub.pem")])
    fabric.load("run/last.ckpt", state)                # signature verified, then loaded safely

Saving is Lightning's own (``torch.save``, atomically); with ``private_key`` every checkpoint
is then signed, the signature written beside it as ``<checkpoint>.sig`` (an OpenSSF
model-signing bundle). Loading verifies that signature first when ``public_key`` is set, then
scans and loads with :func:`ckptguard.load`: an unsafe file raises
:class:`~ckptguard.UnsafeCheckpointError` and nothing in it runs. The result is what
``torch.load`` would return, so model, optimizer, LR scheduler, loop and callback states resume
exactly as with the default plugin.

Importing this module imports Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from ._api import ConfigArg, load, make_config, sign, verify

__all__ = ["SafeCheckpointIO"]


def _keep(storage: Any, location: str) -> Any:
    """Lightning's default ``map_location``: leave storages where they were loaded (CPU)."""
    return storage


def _is_local(path: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(get_filesystem(path), LocalFileSystem)


class SafeCheckpointIO(TorchCheckpointIO):
    """A ``CheckpointIO`` for ``Trainer(plugins=[...])`` and ``Fabric(plugins=[...])`` that
    never unpickles: loading scans the checkpoint (refusing it with
    :class:`~ckptguard.UnsafeCheckpointError` if it is not cleared) and rebuilds it with
    :func:`ckptguard.load`.

    Args:
        public_key: PEM text/bytes or path. When set, every checkpoint must carry a valid
            signature (``<checkpoint><signature_suffix>``) by this key before it is loaded;
            a missing or invalid one raises :class:`~ckptguard.SignatureError`.
        private_key: PEM text/bytes or path. When set, every saved checkpoint is signed.
        password: for an encrypted ``private_key``.
        signature_suffix: where a checkpoint's signature lives, appended to its path.
        config, allow, fail_on: scan settings, as for :func:`ckptguard.scan` (``allow`` the
            classes your hyper-parameters legitimately hold).
    """

    def __init__(self, *, public_key: str | bytes | os.PathLike[str] | None = None,
                 private_key: str | bytes | os.PathLike[str] | None = None,
                 password: str | bytes | None = None, signature_suffix: str = ".sig",
                 config: ConfigArg = None, allow: Iterable[str] = (), fail_on: str | None = None):
        super().__init__()
        self.public_key = public_key
        self.private_key = private_key
        self.password = password
        self.signature_suffix = signature_suffix
        self.config = make_config(config, allow, fail_on)

    def signature_path(self, path: Any) -> str:
        """Where the signature of the checkpoint at ``path`` is written and looked for."""
        return os.fspath(path) + self.signature_suffix

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        if self.private_key is not None:
            if not _is_local(path):
                raise ValueError(f"SafeCheckpointIO signs local checkpoints only, not {path}")
            sign(path, self.private_key, signature=self.signature_path(path), password=self.password)

    def load_checkpoint(self, path: Any, map_location: Any | None = _keep,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Loads ``path`` without unpickling it. ``weights_only`` is accepted for API
        compatibility and ignored: nothing is ever unpickled, whatever it says."""
        fs = get_filesystem(path)
        if not fs.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        if _is_local(path):
            local = os.fspath(path)
            if self.public_key is not None:
                verify(local, self.public_key, signature=self.signature_path(local))
            return load(local, map_location=map_location, config=self.config)
        if self.public_key is not None:
            raise ValueError(f"SafeCheckpointIO verifies local checkpoints only, not {path}")
        with fs.open(path, "rb") as f:
            data = f.read()
        return load(data, map_location=map_location, config=self.config, name=str(path))

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        sig = self.signature_path(path)
        if _is_local(path) and os.path.isfile(sig):
            os.remove(sig)

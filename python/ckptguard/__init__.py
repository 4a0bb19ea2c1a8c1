"""ckptguard: load ML checkpoints without executing pickle.

* :func:`scan` — proves, without executing anything, whether a checkpoint (file, directory,
  DCP / DeepSpeed / litdata container, bytes) is safe to load; returns a :class:`Report`.
* :func:`load` — the safe loader: scans, refuses unsafe input with
  :class:`UnsafeCheckpointError`, and rebuilds tensors and plain values from the pickle without
  running it (zero-copy from a memory map).
* :func:`guard` / :func:`guarded` — the scanner in front of ``torch.load``, ``pickle`` and the
  Lightning / litdata loaders for the whole process.
* :func:`verify` / :func:`sign` — OpenSSF model-signing compatible signatures.
* :mod:`ckptguard.lightning` — ``SafeCheckpointIO`` for ``Trainer`` / ``Fabric``.

Importing ckptguard does not import torch.
"""

from __future__ import annotations

from . import _native
from ._api import (
    Signature,
    Verification,
    default_signature_path,
    generate_key,
    load,
    make_config,
    scan,
    sign,
    verify,
)
from ._errors import (
    CheckpointError,
    MalformedCheckpointError,
    SignatureError,
    UnsafeCheckpointError,
    UnsupportedCheckpointError,
)
from ._report import FileReport, Finding, Report, Summary, WeightsOnly
from .guard import guard, guarded, is_guarded, unguard

#: Scan settings (a ``ckptguard.toml``, extra allowed globals, the failing severity), reusable
#: across calls: ``Config(config=None, allow=(), fail_on=None)``.
Config = _native.Config

__version__ = _native.version()

__all__ = [
    "CheckpointError",
    "Config",
    "FileReport",
    "Finding",
    "MalformedCheckpointError",
    "Report",
    "Signature",
    "SignatureError",
    "Summary",
    "UnsafeCheckpointError",
    "UnsupportedCheckpointError",
    "Verification",
    "WeightsOnly",
    "default_signature_path",
    "generate_key",
    "guard",
    "guarded",
    "is_guarded",
    "load",
    "make_config",
    "scan",
    "sign",
    "unguard",
    "verify",
    "__version__",
]

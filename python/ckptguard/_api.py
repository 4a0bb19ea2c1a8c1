"""scan, load, verify, sign: the package's functions over the extension."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, TypeGuard, Union

from . import _native
from ._build import make_builder
from ._report import Report

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[PathLike, bytes, bytearray, memoryview, IO[bytes]]
ConfigArg = Union[PathLike, "_native.Config", None]

_DEFAULT_CONFIG: _native.Config | None = None


def make_config(config: ConfigArg = None, allow: Iterable[str] = (), fail_on: str | None = None
                ) -> _native.Config:
    """Scan settings. ``config``: a ``ckptguard.toml`` file (never looked up implicitly: a
    configuration found next to a downloaded model could allowlist anything), or a
    :class:`Config` to use as is. ``allow``: extra trusted globals (``module.name`` or
    ``module:qualname``). ``fail_on``: lowest failing severity (default ``high``)."""
    global _DEFAULT_CONFIG
    allow = list(allow)
    if isinstance(config, _native.Config):
        if allow or fail_on is not None:
            raise ValueError("pass allow/fail_on when building the Config, not with it")
        return config
    if config is None and not allow and fail_on is None:
        if _DEFAULT_CONFIG is None:
            _DEFAULT_CONFIG = _native.Config()
        return _DEFAULT_CONFIG
    return _native.Config(os.fspath(config) if config is not None else None, allow, fail_on)


def _is_path(x: Any) -> TypeGuard[PathLike]:
    return isinstance(x, (str, os.PathLike))


def _read_stream(f: IO[bytes]) -> bytes:
    """The rest of a binary stream, leaving its position where it was when it can seek."""
    pos = None
    try:
        if f.seekable():
            pos = f.tell()
    except (AttributeError, OSError, ValueError):
        pos = None
    data = f.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected a binary file object, got {type(data).__name__} from read()")
    if pos is not None:
        f.seek(pos)
    return bytes(data)


def _stream_name(f: Any, default: str) -> str:
    name = getattr(f, "name", None)
    return name if isinstance(name, str) else default


def scan(source: Source | Iterable[PathLike], *, name: str | None = None, config: ConfigArg = None,
         allow: Iterable[str] = (), fail_on: str | None = None) -> Report:
    """Scans a file or directory (recursively; DCP, DeepSpeed and litdata containers as a
    whole), several paths, in-memory bytes, or a binary file object (read from its current
    position, which is restored), without executing anything. Returns the :class:`Report` —
    the document ``ckptguard scan --format json`` prints. Never raises for unsafe input: look at
    ``report.verdict`` / ``report.safe``."""
    cfg = make_config(config, allow, fail_on)
    if _is_path(source):
        return Report.from_json(_native.scan_paths([os.fspath(source)], cfg))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Report.from_json(_native.scan_data(source, name or "<bytes>", cfg))
    if hasattr(source, "read"):
        data = _read_stream(source)  # type: ignore[arg-type]
        return Report.from_json(_native.scan_data(data, name or _stream_name(source, "<stream>"), cfg))
    if isinstance(source, Iterable):
        paths = [os.fspath(p) for p in source]
        return Report.from_json(_native.scan_paths(paths, cfg))
    raise TypeError(f"cannot scan a {type(source).__name__}: pass a path, bytes or a binary file")


def load(source: Source, map_location: Any = None, *, config: ConfigArg = None,
         allow: Iterable[str] = (), fail_on: str | None = None, backend: str = "auto",
         name: str | None = None) -> Any:
    """Loads a checkpoint without executing pickle: scans it first and raises
    :class:`UnsafeCheckpointError` (with the findings) if it is not cleared; otherwise rebuilds
    the object from a closed list of data constructors.

    ``source``: a path (memory-mapped copy-on-write; tensors are zero-copy views of the mapping,
    which they keep alive), a DCP / Lightning sharded checkpoint directory, bytes, or a binary
    file object (read from its current position). Returns what ``torch.load`` would: dicts,
    ``OrderedDict``, lists, tuples, str, int, float, bytes, ``argparse.Namespace``, Lightning's
    ``AttributeDict``, ``torch.Tensor`` / ``torch.nn.Parameter`` placed per ``map_location``
    (same meaning as torch's), numpy arrays where the checkpoint pickled numpy arrays.
    ``backend="numpy"`` (the default when torch is not installed) returns numpy arrays for
    tensors.
    """
    cfg = make_config(config, allow, fail_on)
    builder = make_builder(backend, map_location)
    if _is_path(source):
        obj, _fmt = _native.load_path(os.fspath(source), cfg, builder)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        obj, _fmt = _native.load_data(source, name or "<bytes>", cfg, builder)
    elif hasattr(source, "read"):
        data = source.read()  # type: ignore[union-attr]
        obj, _fmt = _native.load_data(data, name or _stream_name(source, "<stream>"), cfg, builder)
    else:
        raise TypeError(f"cannot load a {type(source).__name__}: pass a path, bytes or a binary file")
    return obj


@dataclass(frozen=True)
class Verification:
    """A signature that verified: what it covered."""

    model: str
    signature: str
    subject_name: str
    root_digest: str
    files: int
    total_bytes: int
    curve: str
    key_hint: str | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Signature:
    """A signature that was written."""

    model: str
    signature: str
    subject_name: str
    root_digest: str
    files: int
    total_bytes: int
    curve: str
    warnings: tuple[str, ...]


def default_signature_path(model: PathLike) -> str:
    """Where a model's signature lives by default (as ``ckptguard sign`` and OpenSSF
    ``model_signing`` put it): ``model.sig`` inside a directory model, next to a file model."""
    p = os.path.normpath(os.fspath(model))
    if os.path.isdir(p):
        return os.path.join(p, "model.sig")
    return os.path.join(os.path.dirname(p), "model.sig")


def _key_pem(key: str | bytes | PathLike) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str) and "-----BEGIN" in key:
        return key.encode()
    with open(os.fspath(key), "rb") as f:
        return f.read()


def verify(path: PathLike, public_key: str | bytes | PathLike, *, signature: PathLike | None = None
           ) -> Verification:
    """Verifies the OpenSSF model-signing signature (key mode) of a file or directory model.
    ``public_key``: PEM text/bytes or a path to a PEM file. Raises :class:`SignatureError` when
    the signature is missing, malformed, by another key, or the model changed."""
    sig = os.fspath(signature) if signature is not None else default_signature_path(path)
    d = _native.verify(os.fspath(path), sig, _key_pem(public_key))
    return Verification(**{**d, "warnings": tuple(d["warnings"])})


def sign(path: PathLike, private_key: str | bytes | PathLike, *, signature: PathLike | None = None,
         password: str | bytes | None = None) -> Signature:
    """Signs a file or directory model, writing an OpenSSF model-signing bundle (verifiable with
    ``model_signing verify key`` and :func:`verify`). ``private_key``: PEM text/bytes or a path
    (PKCS#8, encrypted PKCS#8 with ``password``, or SEC1)."""
    sig = os.fspath(signature) if signature is not None else default_signature_path(path)
    pw = password.encode() if isinstance(password, str) else password
    d = _native.sign(os.fspath(path), sig, _key_pem(private_key), pw)
    return Signature(**{**d, "warnings": tuple(d["warnings"])})


def generate_key(curve: str = "P-256", password: str | bytes | None = None) -> tuple[str, str]:
    """A fresh ECDSA key pair ``(private_key_pem, public_key_pem)`` on P-256, P-384 or P-521."""
    pw = password.encode() if isinstance(password, str) else password
    return _native.generate_key(curve, pw)

"""Builders: how the extension's loaded values become Python objects.

The extension (``crates/python/src/convert.rs``) builds plain data itself and calls one of these
for what needs a library: storages, tensors, dtypes, devices, dict subclasses and records, and the
few data-only globals the safe loader lets through. Nothing here imports a name taken from the
checkpoint: every class and module is from a fixed list.

Storages are zero-copy: a window of the extension's ``Mapping`` (a copy-on-write mapping of the
file, or a copy of the bytes handed over), turned into a ``torch.UntypedStorage`` with
``torch.frombuffer`` (or a numpy array with ``numpy.ndarray(buffer=...)``), which keeps the
mapping alive for as long as any tensor uses it.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import importlib
import importlib.util
import sys
from typing import Any

from ._errors import UnsupportedCheckpointError

# torch dtype name -> numpy dtype string (little-endian; bytes are little-endian on output).
_NUMPY_DTYPES = {
    "bool": "?", "uint8": "u1", "int8": "i1", "int16": "<i2", "uint16": "<u2", "int32": "<i4",
    "uint32": "<u4", "int64": "<i8", "uint64": "<u8", "float16": "<f2", "float32": "<f4",
    "float64": "<f8", "complex64": "<c8", "complex128": "<c16",
}
# Types numpy lacks, provided by ml_dtypes when it is installed.
_ML_DTYPES = {
    "bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
}

# Dict-like records the safe loader produces (crates/load: RECORD_CLASSES), and where their
# class lives. Only these are ever imported.
_ATTRIBUTE_DICTS = {
    "lightning.fabric.utilities.data.AttributeDict": "lightning.fabric.utilities.data",
    "lightning_fabric.utilities.data.AttributeDict": "lightning_fabric.utilities.data",
    "lightning.pytorch.utilities.parsing.AttributeDict": "lightning.pytorch.utilities.parsing",
    "pytorch_lightning.utilities.parsing.AttributeDict": "pytorch_lightning.utilities.parsing",
}
# Modules whose attributes may be returned for a Value::Global (numpy scalar types, torch
# qschemes and layouts, builtin types used as defaultdict factories).
_GLOBAL_MODULES = {"torch", "numpy", "numpy.dtypes", "builtins"}


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("the checkpoint holds tensors: ckptguard.load needs torch (or numpy) "
                          "installed to return them") from None
    return numpy


def _numpy_dtype(name: str) -> Any:
    np = _numpy()

    if name in _NUMPY_DTYPES:
        return np.dtype(_NUMPY_DTYPES[name])
    if name in _ML_DTYPES and importlib.util.find_spec("ml_dtypes") is not None:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    raise UnsupportedCheckpointError(
        f"a {name} tensor has no numpy dtype (install torch, or ml_dtypes for bfloat16/float8)")


def _record(cls: str, pairs: list[tuple[Any, Any]]) -> Any:
    if cls == "collections.OrderedDict":
        return collections.OrderedDict(pairs)
    if cls == "collections.Counter":
        return collections.Counter(dict(pairs))
    if cls == "collections.defaultdict":
        # The default factory is not part of the data the loader keeps.
        return collections.defaultdict(None, pairs)
    if cls == "argparse.Namespace":
        if all(isinstance(k, str) for k, _ in pairs):
            return argparse.Namespace(**dict(pairs))
        return dict(pairs)
    module = _ATTRIBUTE_DICTS.get(cls)
    if module is not None:
        try:
            mod = sys.modules.get(module) or (
                importlib.import_module(module) if importlib.util.find_spec(module.split(".")[0]) else None)
        except ImportError:
            mod = None
        if mod is not None and hasattr(mod, "AttributeDict"):
            return mod.AttributeDict(pairs)
    # DeepSpeed loss scalers and fragment addresses, AttributeDict without Lightning: their fields.
    return dict(pairs)


def _global(name: str) -> Any:
    if name.startswith("numpy.dtype(") and name.endswith(")"):
        return _numpy().dtype(name[len("numpy.dtype('"):-2])
    module, _, attr = name.rpartition(".")
    if module in _GLOBAL_MODULES:
        try:
            mod = builtins if module == "builtins" else importlib.import_module(module)
            return getattr(mod, attr)
        except (ImportError, AttributeError):
            pass
    return name


class _Storage:
    """A window of a mapping, turned into a torch storage or a numpy byte array on first use."""

    __slots__ = ("buffer", "offset", "nbytes", "location", "_torch")

    def __init__(self, buffer: Any, offset: int, nbytes: int, location: str):
        self.buffer = buffer
        self.offset = offset
        self.nbytes = nbytes
        self.location = location
        self._torch: Any = None


class NumpyBuilder:
    """Tensors become numpy arrays (used when torch is not installed, or asked for)."""

    def storage(self, buffer: Any, offset: int, nbytes: int, location: str) -> _Storage:
        return _Storage(buffer, offset, nbytes, location)

    def array(self, st: _Storage, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...],
              offset: int, conj: bool, neg: bool) -> Any:
        np = _numpy()
        dt = _numpy_dtype(dtype)
        item = dt.itemsize
        if st.nbytes == 0 or 0 in shape:
            a = np.zeros(shape, dtype=dt)
        else:
            a = np.ndarray(shape, dtype=dt, buffer=st.buffer, offset=st.offset + offset * item,
                           strides=tuple(s * item for s in strides))
        if conj:
            a = np.conj(a)
        if neg:
            a = np.negative(a)
        return a

    def tensor(self, st: _Storage, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...],
               offset: int, flags: tuple[bool, bool, bool, bool, bool]) -> Any:
        _requires_grad, _parameter, conj, neg, _numpy = flags
        return self.array(st, dtype, shape, strides, offset, conj, neg)

    def record(self, cls: str, pairs: list[tuple[Any, Any]]) -> Any:
        return _record(cls, pairs)

    def dtype(self, name: str) -> Any:
        try:
            return _numpy_dtype(name)
        except UnsupportedCheckpointError:
            return f"torch.{name}"

    def device(self, name: str) -> Any:
        return name

    def global_(self, name: str) -> Any:
        if name.startswith("torch."):
            return name
        return _global(name)


class TorchBuilder(NumpyBuilder):
    """Tensors become ``torch.Tensor`` (``Parameter`` where the checkpoint had one), placed as
    ``torch.load(..., map_location=map_location)`` would place them."""

    def __init__(self, map_location: Any = None):
        import torch
        import torch.serialization as ser

        self.torch = torch
        get = getattr(ser, "_get_restore_location", None)
        self.restore = get(map_location) if get is not None else self._restore_fallback(map_location)
        self.dtypes: dict[str, Any] = {}

    def _restore_fallback(self, map_location: Any) -> Any:
        default = self.torch.serialization.default_restore_location
        if map_location is None:
            return default
        if isinstance(map_location, dict):
            return lambda s, loc: default(s, map_location.get(loc, loc))
        if isinstance(map_location, (str, bytes, self.torch.device)):
            return lambda s, loc: default(s, str(map_location))

        def call(s: Any, loc: str) -> Any:
            r = map_location(s, loc)
            return default(s, loc) if r is None else r

        return call

    def _untyped(self, st: _Storage) -> Any:
        if st._torch is None:
            torch = self.torch
            if st.nbytes == 0:
                raw = torch.UntypedStorage(0)
            else:
                raw = torch.frombuffer(st.buffer, dtype=torch.uint8, count=st.nbytes,
                                       offset=st.offset).untyped_storage()
            st._torch = self.restore(raw, st.location)
        return st._torch

    def tensor(self, st: _Storage, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...],
               offset: int, flags: tuple[bool, bool, bool, bool, bool]) -> Any:
        requires_grad, parameter, conj, neg, numpy = flags
        if numpy:
            return self.array(st, dtype, shape, strides, offset, conj, neg)
        torch = self.torch
        us = self._untyped(st)
        # As torch's _rebuild_tensor (an empty tensor, then set_ to the storage), but created as
        # uint8 and viewed: torch.empty of some dtypes (float4, bits) fails when deterministic
        # algorithms fill uninitialised memory.
        t = torch.empty((0,), dtype=torch.uint8, device=us.device).view(self.dtype(dtype))
        t.set_(us, offset, shape, strides)
        if conj:
            t = t.conj()
        if neg:
            t = t._neg_view()
        if parameter:
            return torch.nn.Parameter(t, requires_grad=requires_grad)
        if requires_grad:
            t.requires_grad_(True)
        return t

    def dtype(self, name: str) -> Any:
        d = self.dtypes.get(name)
        if d is None:
            d = self.dtypes[name] = getattr(self.torch, name)
        return d

    def device(self, name: str) -> Any:
        return self.torch.device(name)

    def global_(self, name: str) -> Any:
        return _global(name)


def make_builder(backend: str, map_location: Any) -> NumpyBuilder:
    """``backend``: ``torch``, ``numpy``, or ``auto`` (torch when it is installed)."""
    if backend == "auto":
        backend = "torch" if ("torch" in sys.modules or importlib.util.find_spec("torch")) else "numpy"
    if backend == "torch":
        return TorchBuilder(map_location)
    if backend == "numpy":
        if map_location not in (None, "cpu"):
            raise ValueError("map_location needs backend='torch'")
        return NumpyBuilder()
    raise ValueError(f"backend must be 'auto', 'torch' or 'numpy', not {backend!r}")

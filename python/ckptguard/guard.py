"""The process-wide guard: the scanner in front of every loader that unpickles.

``ckptguard.guard()`` (or ``with ckptguard.guarded():``) wraps

* ``torch.load`` (also ``torch.serialization.load``) — which covers DeepSpeed checkpoint files
  (``TorchCheckpointEngine.load``), Lightning's ``cloud_io._load`` for paths, fsspec URLs,
  ``http(s)`` URLs (``torch.hub.load_state_dict_from_url`` ends in ``torch.load``) and
  ``BytesIO`` buffers, and the items of DCP checkpoints;
* ``pickle.load``, ``pickle.loads`` and ``pickle.Unpickler`` (``.load()``) — which covers DCP's
  ``.metadata``, litdata's pickle fields, ``numpy.load(allow_pickle=True)`` and any other code
  that unpickles through the ``pickle`` module;
* Lightning's ``_lazy_load`` (whose ``_LazyLoadingUnpickler`` may subclass the original
  ``pickle.Unpickler``) and ``_load_distributed_checkpoint`` (the whole DCP directory is scanned
  first, ``meta.pt`` included);
* litdata's ``PickleSerializer.deserialize``.

Each wrapper scans the input first — the file or directory for paths; the bytes of a file
object from its current position, which is then rewound so the original reads the same bytes —
and raises :class:`~ckptguard.UnsafeCheckpointError` before a single byte is unpickled if the
scan does not clear it. Inputs that scan ``safe`` (or ``skipped``: not a pickle at all, so
unpickling fails before doing anything) are handed unchanged to the original function.

Wrappers that scanned a whole file or directory mark the current thread/context as cleared
while the original runs, so the loads it makes internally (torch's own unpickler on the
``data.pkl`` it just had scanned) are not scanned again. Raw pickle calls are never marked: a
nested load they trigger is scanned on its own.

Modules imported after ``guard()`` are patched when they finish importing (an import hook on
exactly the modules above); names bound earlier with ``from ... import`` are rebound.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.abc
import io
import os
import pickle as _pickle_module
import pickletools
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from . import _native
from ._api import ConfigArg, make_config

__all__ = ["guard", "unguard", "guarded", "is_guarded"]

# True while a wrapper that scanned a superset of what is being read runs the original.
_cleared: contextvars.ContextVar[bool] = contextvars.ContextVar("ckptguard_cleared", default=False)

_lock = threading.RLock()


class _State:
    def __init__(self) -> None:
        self.config: _native.Config | None = None
        self.pickle_level = True
        # (owner module or class, attribute, original, replacement), in installation order.
        self.patches: list[tuple[Any, str, Any, Any]] = []
        self.finder: _PostImportFinder | None = None


_state = _State()

# The real Unpickler, captured before any patching.
_OrigUnpickler = _pickle_module.Unpickler


def _config() -> _native.Config | None:
    return _state.config


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# scanning file objects
# ---------------------------------------------------------------------------------------------

def _label(f: Any) -> str | None:
    """A file object's path, to name it in reports (fsspec files have ``path``)."""
    for attr in ("name", "path"):
        v = getattr(f, attr, None)
        if isinstance(v, str):
            return v
    return None


def _check_seekable(f: Any, name: str, cfg: _native.Config) -> None:
    """Scans what a loader reading a whole file (torch.load) is about to read; rewinds."""
    pos = f.tell()
    data = f.read()
    f.seek(pos)
    if isinstance(data, (bytes, bytearray, memoryview)):  # else a text stream: the loader fails
        _native.check_data(data, name, cfg, _label(f))


def _check_next_pickle(f: Any, name: str, cfg: _native.Config) -> None:
    """Scans the next pickle of a seekable stream — what one pickle.load reads — and rewinds.
    Reads a growing prefix until the pickle is complete, so a file of many pickles is scanned
    pickle by pickle as it is loaded (linear overall), never to its end at each load."""
    pos = f.tell()
    n = 1 << 16
    while True:
        data = f.read(n)
        f.seek(pos)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return  # a text stream: the loader raises its own TypeError
        complete = len(data) < n
        if _native.check_pickle(data, name, cfg, _label(f), complete) is not None:
            return
        n *= 4


class _Replay:
    """A non-seekable stream whose next pickle can be captured before a loader reads it.

    ``capture()`` reads the next pickle opcode by opcode with ``pickletools.genops`` (which
    parses and never executes) and keeps the bytes; the loader then reads those bytes first,
    then the stream. So it reads exactly what was scanned, and the stream is left where a plain
    load would leave it (nothing beyond the pickle is consumed)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.buf = b""
        self.pos = 0
        # Set when the captured bytes do not end a pickle (garbage, or the stream ended): the
        # loader then sees only those bytes, never unscanned ones after them.
        self.sealed = False

    def _more(self, n: int) -> bytes:
        if self.sealed:
            return b""
        return self.stream.read() if n < 0 else self.stream.read(n)

    def read(self, n: int | None = -1) -> bytes:
        avail = self.buf[self.pos:]
        if n is None or n < 0:
            self.buf, self.pos = b"", 0
            return avail + self._more(-1)
        if len(avail) >= n:
            self.pos += n
            return avail[:n]
        self.buf, self.pos = b"", 0
        return avail + self._more(n - len(avail))

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        avail = self.buf[self.pos:]
        i = avail.find(b"\n")
        if i >= 0 and (size < 0 or i < size):
            self.pos += i + 1
            return avail[:i + 1]
        if 0 <= size <= len(avail):
            self.pos += size
            return avail[:size]
        self.buf, self.pos = b"", 0
        if self.sealed:
            return avail
        return avail + self.stream.readline(-1 if size < 0 else size - len(avail))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def capture(self) -> bytes:
        """The next pickle's bytes (up to its STOP, or as far as it parses), kept for replay."""
        outer = self
        taken = bytearray()

        class _Source:  # no tell(): genops then reads sequentially
            def read(self, n: int = -1) -> bytes:
                d = outer.read(n)
                taken.extend(d)
                return d

            def readline(self, n: int = -1) -> bytes:
                d = outer.readline(n)
                taken.extend(d)
                return d

        self.sealed = False
        last = None
        try:
            for opcode, _arg, _pos in pickletools.genops(_Source()):  # type: ignore[arg-type]
                last = opcode.name
            self.sealed = last != "STOP"
        except Exception:  # noqa: BLE001 - garbage or EOF: the loader fails on it too
            self.sealed = True
        self.buf = bytes(taken) + self.buf[self.pos:]
        self.pos = 0
        return bytes(taken)


def _check_stream(f: Any, name: str, cfg: _native.Config) -> Any:
    """Scans the next pickle a loader is about to read from `f`; returns the object to hand
    the loader (`f` itself, or a replaying wrapper of a non-seekable stream)."""
    if _seekable(f):
        _check_next_pickle(f, name, cfg)
        return f
    replay = f if isinstance(f, _Replay) else _Replay(f)
    _native.check_pickle(replay.capture(), name, cfg, _label(replay.stream))
    return replay


# ---------------------------------------------------------------------------------------------
# the wrappers
# ---------------------------------------------------------------------------------------------

def _mark(f: Callable[..., Any], original: Any) -> Callable[..., Any]:
    f.__ckptguard_original__ = original  # type: ignore[attr-defined]
    return f


def _run_cleared(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = _cleared.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _cleared.reset(token)


def _wrap_torch_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = _config()
        if cfg is None or _cleared.get():
            return orig(f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            p = os.fspath(f)
            if os.path.isfile(p):
                _native.check_path(p, cfg)
        elif hasattr(f, "read"):
            if _seekable(f):
                _check_seekable(f, "<torch.load stream>", cfg)
            else:  # torch needs seek(): it would copy the stream into memory too
                data = f.read()
                _native.check_data(data, "<torch.load stream>", cfg, _label(f))
                f = io.BytesIO(data)
        return _run_cleared(orig, f, *args, **kwargs)

    return _mark(load, orig)


def _wrap_path_loader(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Lightning's `_lazy_load(filename)` and `_load_distributed_checkpoint(folder)`: scan the
    file, or the whole directory container, then run the original cleared."""

    @functools.wraps(orig)
    def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = _config()
        if cfg is None or _cleared.get():
            return orig(path, *args, **kwargs)
        if isinstance(path, (str, os.PathLike)) and os.path.exists(os.fspath(path)):
            _native.check_path(os.fspath(path), cfg)
        return _run_cleared(orig, path, *args, **kwargs)

    return _mark(wrapper, orig)


def _wrap_deserialize(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def deserialize(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = _config()
        if cfg is None or _cleared.get():
            return orig(self, data, *args, **kwargs)
        _native.check_pickle(data, "<litdata pickle field>", cfg)
        return _run_cleared(orig, self, data, *args, **kwargs)

    return _mark(deserialize, orig)


def _wrap_pickle_loads(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def loads(data: Any, /, *args: Any, **kwargs: Any) -> Any:
        cfg = _config()
        if cfg is not None and not _cleared.get() and not isinstance(data, str):
            _native.check_pickle(data, "<pickle.loads>", cfg)
        return orig(data, *args, **kwargs)

    return _mark(loads, orig)


def _wrap_pickle_load(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def load(file: Any, /, *args: Any, **kwargs: Any) -> Any:
        cfg = _config()
        if cfg is not None and not _cleared.get() and hasattr(file, "read"):
            file = _check_stream(file, "<pickle.load>", cfg)
        return orig(file, *args, **kwargs)

    return _mark(load, orig)


class GuardedUnpickler(_OrigUnpickler):  # type: ignore[misc,valid-type]
    """``pickle.Unpickler`` while the guard is on: ``load()`` scans what it is about to read.
    Behaves exactly like the original when the guard is off (classes defined while it was on
    keep it as their base)."""

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        if _config() is not None and not _cleared.get() and not _seekable(file):
            file = _Replay(file)
        super().__init__(file, *args, **kwargs)
        self.__file = file

    def load(self) -> Any:
        cfg = _config()
        if cfg is not None and not _cleared.get():
            _check_stream(self.__file, "<pickle.Unpickler>", cfg)
        return super().load()


_mark(GuardedUnpickler, _OrigUnpickler)  # type: ignore[arg-type]


# (module, attribute path, wrapper factory, group)
_TARGETS: list[tuple[str, str, Callable[[Any], Any], str]] = [
    ("torch.serialization", "load", _wrap_torch_load, "torch"),
    ("lightning.fabric.utilities.load", "_lazy_load", _wrap_path_loader, "lightning"),
    ("lightning.fabric.utilities.load", "_load_distributed_checkpoint", _wrap_path_loader, "lightning"),
    ("lightning_fabric.utilities.load", "_lazy_load", _wrap_path_loader, "lightning"),
    ("lightning_fabric.utilities.load", "_load_distributed_checkpoint", _wrap_path_loader, "lightning"),
    ("litdata.streaming.serializers", "PickleSerializer.deserialize", _wrap_deserialize, "litdata"),
    ("pickle", "load", _wrap_pickle_load, "pickle"),
    ("pickle", "loads", _wrap_pickle_loads, "pickle"),
    ("pickle", "Unpickler", lambda orig: GuardedUnpickler, "pickle"),
]
_TARGET_MODULES = {m for m, _, _, _ in _TARGETS}


# ---------------------------------------------------------------------------------------------
# installing and removing
# ---------------------------------------------------------------------------------------------

def _owner(module: types.ModuleType, path: str) -> tuple[Any, str] | None:
    owner: Any = module
    *parents, attr = path.split(".")
    for p in parents:
        owner = vars(owner).get(p)
        if owner is None:
            return None
    return (owner, attr) if attr in vars(owner) else None


def _patch_module(name: str, module: types.ModuleType) -> dict[int, tuple[Any, Any]]:
    """Installs the wrappers of `module`; returns {id(original): (original, replacement)}."""
    done: dict[int, tuple[Any, Any]] = {}
    for mod_name, path, factory, group in _TARGETS:
        if mod_name != name or (group == "pickle" and not _state.pickle_level):
            continue
        found = _owner(module, path)
        if found is None:
            continue
        owner, attr = found
        orig = vars(owner)[attr]
        if getattr(orig, "__ckptguard_original__", None) is not None:
            continue  # already wrapped
        repl = factory(orig)
        setattr(owner, attr, repl)
        _state.patches.append((owner, attr, orig, repl))
        done[id(orig)] = (orig, repl)
    return done


def _rebind(replaced: dict[int, tuple[Any, Any]]) -> None:
    """Module-level aliases of wrapped objects (``from torch.serialization import load``,
    ``from lightning.fabric.utilities.load import _lazy_load``) get the wrapper too."""
    if not replaced:
        return
    for mod in list(sys.modules.values()):
        if not isinstance(mod, types.ModuleType) or mod.__name__ == __name__:
            continue
        ns = mod.__dict__
        for key, value in list(ns.items()):
            hit = replaced.get(id(value))
            if hit is not None and hit[0] is value:
                ns[key] = hit[1]
                _state.patches.append((mod, key, value, hit[1]))


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Patches the target modules right after they are imported (before any importer can bind
    names from them)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _TARGET_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_patch(module: types.ModuleType) -> None:
            exec_module(module)
            with _lock:
                if _state.config is not None:
                    _patch_module(fullname, module)

        loader.exec_module = exec_and_patch  # type: ignore[union-attr,method-assign]
        return spec


def _install() -> None:
    replaced: dict[int, tuple[Any, Any]] = {}
    for name in sorted(_TARGET_MODULES):
        module = sys.modules.get(name)
        if isinstance(module, types.ModuleType):
            replaced.update(_patch_module(name, module))
    _rebind(replaced)
    if _state.finder is None:
        _state.finder = _PostImportFinder()
        sys.meta_path.insert(0, _state.finder)


def _uninstall() -> None:
    for owner, key, orig, repl in reversed(_state.patches):
        if vars(owner).get(key) is repl:  # if someone patched over it, leave it (a pass-through)
            setattr(owner, key, orig)
    _state.patches.clear()
    if _state.finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_state.finder)
        _state.finder = None


def guard(*, config: ConfigArg = None, allow: Iterable[str] = (), fail_on: str | None = None,
          pickle: bool = True) -> None:
    """Puts the scanner in front of ``torch.load``, ``pickle.load``/``loads``/``Unpickler``,
    Lightning's ``_lazy_load`` and ``_load_distributed_checkpoint`` and litdata's
    ``PickleSerializer.deserialize`` for the whole process (see the module docs). Unsafe input
    raises :class:`~ckptguard.UnsafeCheckpointError` before anything is unpickled; safe input is
    handed unchanged to the original function. Calling it again changes the settings.

    ``config`` / ``allow`` / ``fail_on``: as for :func:`ckptguard.scan` (``allow`` the classes
    your own pickles legitimately use). ``pickle=False`` leaves the ``pickle`` module alone and
    guards only the torch / Lightning / litdata entry points — litdata's fields and DCP's
    ``.metadata`` are still covered by their own wrappers, other direct pickle use is not.

    Note that with ``pickle=True`` every unpickling through the ``pickle`` module is judged by
    the same default-deny policy, including torch.distributed object collectives
    (``broadcast_object_list``) of classes not on the allowlist.
    """
    cfg = make_config(config, allow, fail_on)
    with _lock:
        if _state.config is not None and _state.pickle_level != pickle:
            _uninstall()
        _state.config = cfg
        _state.pickle_level = pickle
        _install()


def unguard() -> None:
    """Removes the guard (restores the original functions)."""
    with _lock:
        _state.config = None
        _uninstall()


def is_guarded() -> bool:
    """Whether the guard is on."""
    return _state.config is not None


@contextlib.contextmanager
def guarded(*, config: ConfigArg = None, allow: Iterable[str] = (), fail_on: str | None = None,
            pickle: bool = True) -> Iterator[None]:
    """``with ckptguard.guarded(): ...`` — the guard for the block; the previous state (off,
    or on with other settings) is restored afterwards."""
    with _lock:
        before = (_state.config, _state.pickle_level)
        guard(config=config, allow=allow, fail_on=fail_on, pickle=pickle)
    try:
        yield
    finally:
        with _lock:
            if before[0] is None:
                unguard()
            else:
                guard(config=before[0], pickle=before[1])

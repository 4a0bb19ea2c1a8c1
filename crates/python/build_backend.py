"""PEP 517 build backend for ``pip install .``: maturin, minus the CLI's static-link flags.

``.cargo/config.toml`` links the ``ckptguard`` CLI statically (``-C target-feature=+crt-static``
for ``x86_64-unknown-linux-gnu``), and rustc cannot build a ``cdylib`` (a Python extension) with
``+crt-static``. Cargo *appends* array values from ``--config`` overrides and from
``CARGO_TARGET_<TRIPLE>_RUSTFLAGS`` to the file's list, and rustc honours ``+crt-static`` when it
appears anywhere, so neither can switch it off. Only ``RUSTFLAGS`` / ``CARGO_ENCODED_RUSTFLAGS``
replace the configured flags: this backend sets ``CARGO_ENCODED_RUSTFLAGS=""`` (unless the caller
set either variable) and hands every hook to maturin.

Cargo keys artifacts by their flags, so the extension's dependencies live beside the CLI's in
``target/`` without rebuilding each other.
"""

from __future__ import annotations

import os

if "CARGO_ENCODED_RUSTFLAGS" not in os.environ and "RUSTFLAGS" not in os.environ:
    os.environ["CARGO_ENCODED_RUSTFLAGS"] = ""

import maturin as _maturin

_HOOKS = (
    "build_wheel",
    "build_sdist",
    "build_editable",
    "get_requires_for_build_wheel",
    "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable",
)
for _name in _HOOKS:
    if hasattr(_maturin, _name):
        globals()[_name] = getattr(_maturin, _name)

__all__ = [n for n in _HOOKS if n in globals()]

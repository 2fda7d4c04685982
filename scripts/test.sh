#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, recorded exchange frames,
# the simulator, end-to-end against the running node and the real binary).
# Needs nothing but the Rust toolchain: SQLite is embedded, exchanges are simulated on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The tests run with misleading settings in the environment: no test may depend on the
# caller's `BEAST_*` variables, `SERVER_TYPE` or `RUST_LOG` (a developer's shell may set them).
# A `RUST_LOG` of your own is kept; with `TEST_LOG=1` (logs of in-process nodes) and none, `info`.
env BEAST_ADMIN_KEY=not-the-test-key BEAST_DATA_DIR=/nonexistent/beast-data \
    BEAST_CONFIG=/nonexistent/beast.toml BEAST_ROLES=webhook BEAST_SIMULATE=false \
    BEAST_PRICE_HTTP=127.0.0.1:1 BEAST_LOG_FORMAT=text SERVER_TYPE=WEBHOOK_SERVER RUST_LOG="${RUST_LOG:-$([ -n "${TEST_LOG:-}" ] && echo info || echo off)}" \
    cargo test --workspace --locked

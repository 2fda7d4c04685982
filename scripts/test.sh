#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, recorded exchange frames,
# the simulator, end-to-end against the running node and the real binary).
# Needs nothing but the Rust toolchain: SQLite is embedded, exchanges are simulated on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

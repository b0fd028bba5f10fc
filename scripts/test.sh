#!/usr/bin/env bash
# Runs every test: lints, Rust unit and integration tests (real model), and the end-to-end
# tests that drive the gateway binary with the official `openai` Python client.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh --test
cargo build --release --locked --workspace
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace
.venv/bin/python -m pytest -q tests/e2e tests/deploy

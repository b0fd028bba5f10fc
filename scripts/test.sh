#!/usr/bin/env bash
# Runs every test: lints, Rust unit and integration tests (real model, real SQLite and
# PostgreSQL), and the end-to-end tests that drive the gateway binary with the official `openai`
# Python client (two replicas sharing PostgreSQL among them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Free disk first in the log: a full release build with its test binaries takes about 2 GB.
echo "test.sh: $(df -h --output=avail . | tail -1 | tr -d ' ') free on the build disk" >&2
scripts/setup.sh --test
# A real PostgreSQL server on loopback for the shared-store tests (installed and started if needed).
CADA_TEST_POSTGRES_URL="${CADA_TEST_POSTGRES_URL:-$(scripts/test-postgres.sh)}"
export CADA_TEST_POSTGRES_URL
case "$CADA_TEST_POSTGRES_URL" in
  postgres://* | postgresql://*) ;;
  *) echo "test.sh: CADA_TEST_POSTGRES_URL is not a postgres:// URL" >&2; exit 1 ;;
esac
# Every platform's crates, not only this one's: core/tests/engine_cpu.rs reads llama.cpp's
# sources through `cargo metadata --offline`, which needs them all.
cargo fetch --locked
cargo build --release --locked --workspace
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace
.venv/bin/python -m pytest -q tests/e2e tests/deploy

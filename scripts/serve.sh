#!/usr/bin/env bash
# Runs the gateway on the default model, installing build tools and fetching models first if
# they are missing. Arguments go to cada-gateway, e.g. scripts/serve.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
exec cargo run --release --locked -p cada-gateway -- "$@"

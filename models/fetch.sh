#!/usr/bin/env bash
# Fetches every model of models/registry.toml into models/ and verifies its sha256.
# Idempotent; exits non-zero with a clear message on failure. Extra arguments: model ids.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "fetch: error: Python 3.11+ is needed (set PYTHON=...)" >&2
  exit 1
fi
exec "$python" "$here/fetch.py" --registry "$here/registry.toml" "$@"

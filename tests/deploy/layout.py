"""Where things are, for every check here: the repository, its deploy/ tree, and the
directories the images put things in, which the manifests and the compose file must agree on."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Where the images put things (deploy/docker/Dockerfile); manifests must agree.
MODELS_DIR = "/var/lib/cada/models"
DATA_DIR = "/var/lib/cada/data"
RUNS_DIR = "/var/lib/cada/runs"

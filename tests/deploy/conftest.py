"""Fixtures shared by the deployment checks: the optional tools that only some machines have
(kubectl, systemd-analyze, promtool) and whose tests skip without them."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest


@pytest.fixture
def tool() -> Callable[..., str]:
    """`tool(name, why="")` is the path of a command on PATH; the test skips when it is missing."""

    def find(name: str, why: str = "") -> str:
        found = shutil.which(name)
        if not found:
            pytest.skip(f"{name} is not installed" + (f" ({why})" if why else ""))
        return found

    return find

"""Starts the real `cada-gateway` binary (release build) on 127.0.0.1:0 with the default model
and hands tests its base URL. The binary path can be overridden with CADA_GATEWAY_BIN."""

import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


class Gateway:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        registry: pathlib.Path = ROOT / "models" / "registry.toml",
        adapter: str = "none",
    ):
        binary = os.environ.get("CADA_GATEWAY_BIN", str(ROOT / "target" / "release" / "cada-gateway"))
        env = {**os.environ, "CADA_LOG": "info", "NO_COLOR": "1", **(env or {})}
        self.proc = subprocess.Popen(
            # `--adapter none` by default: the tests serve the base model, whatever was promoted
            # locally or shipped.
            [binary, "--listen", "127.0.0.1:0", "--registry", str(registry), "--adapter", adapter, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        self.url = self._wait_for_address()
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_ready()

    def _wait_for_address(self) -> str:
        deadline = time.time() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                return m.group(1)
            if time.time() > deadline:
                break
        raise RuntimeError("gateway did not report its address:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def _wait_ready(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway exited:\n" + "".join(self.log))
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gateway never became ready")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    # Settings come from both flags and CADA_* variables (test_settings_from_env checks them).
    # Plain serving by default here: these tests are about the OpenAI wire format; the safety
    # tests pick their mode per request.
    gw = Gateway(
        "--ctx-per-slot",
        "1024",
        "--safety-mode",
        "off",
        "--data-dir",
        str(tmp_path_factory.mktemp("data")),
        "--policy-dir",
        str(ROOT / "configs" / "policy"),
        env={"CADA_PARALLEL": "6", "CADA_SERVED_MODEL_NAME": MODEL},
    )
    yield gw
    assert gw.stop() == 0, "gateway did not exit cleanly on SIGTERM:\n" + "".join(gw.log[-20:])


@pytest.fixture(scope="session")
def client(gateway):
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def shipped_registry(tmp: pathlib.Path) -> pathlib.Path:
    """A copy of the model registry whose files (models and the committed release adapters) are
    links to the repository's, with no adapter registry beside it: what a fresh clone serves,
    whatever a developer promoted locally."""
    models = ROOT / "models"
    for entry in models.iterdir():
        if entry.name in ("registry.toml", "adapters") or entry.suffix == ".py":
            continue
        (tmp / entry.name).symlink_to(entry.resolve())
    (tmp / "registry.toml").write_text((models / "registry.toml").read_text())
    return tmp / "registry.toml"

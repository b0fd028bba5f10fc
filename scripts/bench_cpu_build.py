"""Decode speed of several server binaries on this machine, one at a time, in one run.

Each `--server NAME=PATH` is a `cada-gateway` binary, or llama.cpp's `llama-server` when its
file name says so. Every round starts each server alone (rotating the order between rounds, so
drift of the machine falls on all), sends one warm-up request and then `--requests` greedy
streamed chat requests of `--tokens` tokens (ignore_eos) over HTTP, and stops it. The decode rate
of a request is (completion tokens - 1) / (last content chunk - first content chunk), measured by
this client, which treats both servers alike. A server that dies (e.g. SIGSEGV) is reported as
crashed. Writes target/bench/cpu_build.json and prints a Markdown table. Stdlib only.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPT = "Write a long story about a lighthouse keeper and the storm that changed her life."


def model_path() -> tuple[pathlib.Path, str]:
    registry = ROOT / "models" / "registry.toml"
    reg = tomllib.loads(registry.read_text())
    entry = next(m for m in reg["model"] if m["id"] == reg["default_chat"])
    return registry.parent / entry["files"][0]["path"], entry["id"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, binary: str, threads: int, data: pathlib.Path):
        self.name = name
        self.log: list[str] = []
        model, self.model_id = model_path()
        env = {**os.environ, "NO_COLOR": "1"}
        if "llama-server" in pathlib.Path(binary).name:
            port = free_port()
            cmd = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                   "-c", "1024", "-np", "1", "-t", str(threads), "-fa", "off", "-ngl", "0",
                   "--no-webui"]
            self.url, self.ready_path = f"http://127.0.0.1:{port}", "/health"
        else:
            cmd = [binary, "--listen", "127.0.0.1:0", "--registry", str(ROOT / "models/registry.toml"),
                   "--adapter", "none", "--safety-mode", "off", "--parallel", "1",
                   "--ctx-per-slot", "1024", "--threads", str(threads), "--data-dir", str(data),
                   "--policy-dir", str(ROOT / "configs/policy")]
            # The benchmark repeats one greedy request: the cache would answer it from memory.
            env["CADA__CACHE__ENABLED"] = "false"
            # The only caller of its loopback gateway: no anonymous rate limit.
            env["CADA__AUTH__ANONYMOUS__REQUESTS_PER_MINUTE"] = "0"
            self.url, self.ready_path = None, "/readyz"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return
            if self.url is None:
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", "".join(self.log))
                self.url = m.group(1) if m else None
            if self.url and self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not become ready:\n" + "".join(self.log[-30:]))

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def crashed(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"exited with signal {-code}" if code < 0 else f"exited with status {code}"

    def request(self, tokens: int) -> dict:
        body = json.dumps({
            "model": self.model_id,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "cache_prompt": False,
            "stream": True, "stream_options": {"include_usage": True},
        }).encode()
        req = urllib.request.Request(self.url + "/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        sent = time.perf_counter()
        first = last = None
        chunks = 0
        usage = None
        with urllib.request.urlopen(req, timeout=600) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices", []):
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        chunks += 1
        n = (usage or {}).get("completion_tokens") or chunks
        return {"completion_tokens": n, "ttft_ms": (first - sent) * 1e3,
                "decode_tok_s": (n - 1) / (last - first)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def cpu() -> dict:
    info = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    found = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    flags = set(found.group(1).split()) if found else set()
    return {"model": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512": "avx512f" in flags}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    servers = [s.split("=", 1) for s in args.server]
    results = {name: {"runs": [], "failure": None} for name, _ in servers}
    for rnd in range(args.rounds):
        order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
        for name, binary in order:
            if results[name]["failure"]:
                continue
            with tempfile.TemporaryDirectory() as data:
                server = Server(name, binary, args.threads, pathlib.Path(data))
                try:
                    if server.crashed():
                        raise RuntimeError(server.crashed())
                    server.request(16)  # warm-up
                    for _ in range(args.requests):
                        run = server.request(args.tokens)
                        results[name]["runs"].append(run)
                        print(f"round {rnd + 1} {name}: {run['decode_tok_s']:.1f} tok/s, "
                              f"first token {run['ttft_ms']:.0f} ms", flush=True)
                except (OSError, RuntimeError, json.JSONDecodeError) as e:
                    time.sleep(0.5)
                    results[name]["failure"] = server.crashed() or str(e)
                    print(f"round {rnd + 1} {name}: FAILED ({results[name]['failure']})", flush=True)
                finally:
                    server.stop()
    base = results[servers[0][0]]["runs"]
    base_rate = statistics.median(r["decode_tok_s"] for r in base) if base else None
    print(f"\n{cpu()['model']}, {args.threads} threads, {args.tokens} tokens per request, "
          f"{args.rounds} rounds x {args.requests} requests\n")
    print("| build | decode tok/s (median, min-max) | vs " + servers[0][0] + " | first token (median) |")
    print("|---|---|---|---|")
    for name, _ in servers:
        runs = results[name]["runs"]
        if results[name]["failure"] and not runs:
            print(f"| {name} | failed: {results[name]['failure']} | | |")
            continue
        rates = [r["decode_tok_s"] for r in runs]
        med = statistics.median(rates)
        results[name]["median_decode_tok_s"] = med
        ratio = f"{med / base_rate:.3f}x" if base_rate else ""
        ttft = statistics.median(r["ttft_ms"] for r in runs)
        print(f"| {name} | {med:.1f} ({min(rates):.1f}-{max(rates):.1f}) | {ratio} | {ttft:.0f} ms |")
    out = ROOT / "target" / "bench" / "cpu_build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "cpu": cpu(), "threads": args.threads,
        "tokens": args.tokens, "rounds": args.rounds, "requests": args.requests,
        "servers": dict(servers), "results": results}, indent=2))


if __name__ == "__main__":
    main()

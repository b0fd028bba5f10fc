"""Cost of `/v1/moderations` per input (README "Benchmark"), against the cheapest model call on
the same gateway in the same run: a chat completion in `off` with `max_tokens: 1` (one prefill of
the request, one token). Serves what the first command serves (the release adapter); the inputs
are the dev set's first --n prompts. Each figure is the median of --rounds rounds after a warm-up;
batches of 1, 8 and 32 inputs per moderation request, the baseline sent one at a time and
--concurrency in flight. Run it alone on the machine.

Usage: python3 scripts/bench_moderations.py [--n 32] [--rounds 3] [--out target/bench/moderations.json]
Needs a release build (cargo build --release) and the fetched models.
"""

import argparse
import concurrent.futures
import json
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from eval_default_model import ROOT, start  # noqa: E402

MODEL = "smollm2-135m-instruct"


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def baseline(url: str, texts: list[str], concurrency: int) -> float:
    """Seconds per text for `off` chat completions of one token, `concurrency` in flight."""
    def one(t):
        post(url, "/v1/chat/completions", {"model": MODEL, "max_tokens": 1, "temperature": 0,
                                            "safety_mode": "off",
                                            "messages": [{"role": "user", "content": t}]})
    start_t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts))
    return (time.perf_counter() - start_t) / len(texts)


def moderations(url: str, texts: list[str], batch: int) -> float:
    """Seconds per text for moderation requests of `batch` inputs, sent one after another."""
    start_t = time.perf_counter()
    for i in range(0, len(texts), batch):
        r = post(url, "/v1/moderations", {"input": texts[i:i + batch]})
        assert len(r["results"]) == len(texts[i:i + batch])
    return (time.perf_counter() - start_t) / len(texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "target/bench/moderations.json"))
    args = ap.parse_args()
    texts = [json.loads(line)["prompt"] for line in open(ROOT / "configs/policy/dev.jsonl")][: args.n]
    with tempfile.TemporaryDirectory() as data:
        proc, url = start("promoted", pathlib.Path(data))
        try:
            moderations(url, texts[:8], 8)  # warm-up
            baseline(url, texts[:8], args.concurrency)
            runs = {"off, 1 token, 1 in flight": lambda: baseline(url, texts, 1),
                    f"off, 1 token, {args.concurrency} in flight": lambda: baseline(url, texts, args.concurrency),
                    "moderations, 1 input per request": lambda: moderations(url, texts, 1),
                    "moderations, 8 inputs per request": lambda: moderations(url, texts, 8),
                    "moderations, 32 inputs per request": lambda: moderations(url, texts, 32)}
            results = {name: statistics.median(f() for _ in range(args.rounds)) * 1000
                       for name, f in runs.items()}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    base = results["off, 1 token, 1 in flight"]
    print(f"{len(texts)} dev prompts, median of {args.rounds} rounds")
    print("| measure | ms per input | vs off, 1 token, 1 in flight |\n|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f}x |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": len(texts), "rounds": args.rounds, "ms_per_input": results}, indent=2))


if __name__ == "__main__":
    main()

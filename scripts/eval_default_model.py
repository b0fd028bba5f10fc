"""What the default model does (docs/default-model.md): the dev set, the
utility set and the held-out outside requests (configs/policy/outside/heldout.jsonl) through the
real gateway in `off`, `adaptive` and `trained` mode with the release adapter the default
configuration serves, and the base model without it (dev and outside sets in `off`, utility set
in every mode); --sets picks among them (the outside set alone takes about 31 minutes). Latency is the mean over the dev set's benign requests, under load
(--concurrency requests in flight, harmful ones among them) and one request at a time (the benign
requests alone, in `off` and `adaptive`). One gateway at a time, alone on the machine (about 50
minutes on 2 cores; --skip-base leaves out the base model's rows, which no adapter changes;
--latency-only measures only the one-at-a-time latency, about 4 minutes).
Writes every report under --out and prints the tables; --reprint prints them again from the
reports under --out.

Usage: python3 scripts/eval_default_model.py [--out DIR] [--concurrency N] [--skip-base] [--latency-only]
       [--sets dev,utility,outside] [--modes off,adaptive,trained] [--reprint]
Needs a release build (cargo build --release) and the fetched models.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
GATEWAY = ROOT / "target" / "release" / "cada-gateway"
TRAINER = ROOT / "target" / "release" / "cada-trainer"
SETS = {"dev": ROOT / "configs/policy/dev.jsonl", "utility": ROOT / "configs/policy/utility.jsonl",
        "outside": ROOT / "configs/policy/outside/heldout.jsonl"}
MODES = ["off", "adaptive", "trained"]


def start(adapter: str, data: pathlib.Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [str(GATEWAY), "--listen", "127.0.0.1:0", "--adapter", adapter, "--data-dir", str(data)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # The response cache off: the dev set's benign requests are asked twice (under load, then
        # one at a time), and the evaluation measures the model, not the cache.
        # No anonymous rate limit: the evaluation is the only caller of its loopback gateway.
        env={"CADA_LOG": "warn,cada_gateway=info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin",
             "CADA__CACHE__ENABLED": "false", "CADA__AUTH__ANONYMOUS__REQUESTS_PER_MINUTE": "0"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    else:
        sys.exit(f"eval: the gateway exited before listening (adapter {adapter})")
    # Keep reading its log so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    sys.exit("eval: the gateway never became ready")


def benign_subset(out: pathlib.Path) -> pathlib.Path:
    """The dev set's benign requests, for the one-at-a-time latency."""
    path = out / "dev-benign.jsonl"
    lines = [l for l in SETS["dev"].read_text().splitlines() if l.strip() and json.loads(l)["label"] != "refuse"]
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate(url: str, mode: str, data: pathlib.Path, out: pathlib.Path, concurrency: int) -> dict:
    subprocess.run(
        [str(TRAINER), "eval", "--base-url", url + "/v1", "--data", str(data), "--mode", mode,
         "--max-tokens", "64", "--concurrency", str(concurrency), "--out", str(out)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / time.strftime("default-model-%Y%m%dT%H%M%SZ", time.gmtime()))
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-base", action="store_true", help="leave out the base model's rows")
    parser.add_argument("--latency-only", action="store_true", help="only the one-at-a-time latency")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    parser.add_argument("--modes", default=",".join(MODES), help="the release adapter's modes, comma-separated: " + ", ".join(MODES))
    parser.add_argument("--reprint", action="store_true", help="print the tables of the reports under --out again")
    args = parser.parse_args()
    chosen = [n for n in args.sets.split(",") if n]
    if unknown := set(chosen) - set(SETS):
        sys.exit(f"eval: unknown sets {sorted(unknown)}")
    registry = tomllib.loads((ROOT / "models/registry.toml").read_text())
    release = registry["adapter"][0]
    if args.reprint:
        return reprint(args.out, release["id"], chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    # The release adapter first, on both sets in every mode (the bars compare its modes with each
    # other); the base model on the dev set in `off` only (its deliberating modes are what the
    # adapter replaces, and cost an hour on 2 cores), on the utility set in every mode.
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        sys.exit(f"eval: unknown modes {sorted(unknown)}")
    plan = [(release["id"], str(ROOT / "models" / release["path"]), {m: chosen for m in MODES if m in modes}),
            ("base model", "none", {"off": chosen, "adaptive": ["utility"], "trained": ["utility"]})]
    if args.skip_base or args.latency_only:
        plan = plan[:1]
    if args.latency_only:
        plan = [(label, adapter, {}) for label, adapter, _ in plan]
    single = {}
    for label, adapter, modes in plan:
        proc, url = start(adapter, args.out / f"data-{label.replace(' ', '-')}")
        try:
            for mode, sets in modes.items():
                r = {name: evaluate(url, mode, SETS[name], args.out / f"{label.replace(' ', '-')}-{mode}-{name}.json", args.concurrency)
                     for name in sets if name in chosen}
                rows.append((label, mode, r))
                print(f"eval: {label} {mode} done", file=sys.stderr)
            if label == release["id"] and (("dev" in chosen and {"off", "adaptive"} <= set(modes)) or args.latency_only):
                benign = benign_subset(args.out)
                for mode in ["off", "adaptive"]:
                    single[mode] = evaluate(url, mode, benign, args.out / f"{label}-{mode}-dev-benign-c1.json", 1)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if single:
        latency_table(single, release["id"])
    if "dev" in chosen:
        dev_table(rows, release["id"])
    if "outside" in chosen:
        outside_table(rows)


def reprint(out: pathlib.Path, release: str, chosen: list) -> None:
    """The tables of an earlier run, from the reports it wrote (named `<adapter>-<mode>-<set>.json`)."""
    rows = []
    for label in [release, "base-model"]:
        for mode in MODES:
            r = {name: json.loads(f.read_text()) for name in chosen
                 if (f := out / f"{label}-{mode}-{name}.json").exists()}
            if r:
                rows.append((label.replace("-", " ") if label == "base-model" else label, mode, r))
    single = {m: json.loads(f.read_text()) for m in ["off", "adaptive"]
              if (f := out / f"{release}-{m}-dev-benign-c1.json").exists()}
    if len(single) == 2:
        latency_table(single, release)
    if any("dev" in r for _, _, r in rows):
        dev_table(rows, release)
    if any("outside" in r for _, _, r in rows):
        outside_table(rows)


def latency_table(single: dict, release: str) -> None:
    one = {m: r["cost"]["all"]["latency_ms"]["mean"] for m, r in single.items()}
    print(f"One request at a time, {release}, the dev set's {single['off']['n']} benign requests: "
          f"off {one['off']:.0f} ms, adaptive {one['adaptive']:.0f} ms ({one['adaptive'] / one['off']:.2f}x)")
    # The requests `adaptive` served directly (no verdict): what its probe adds to an answer.
    off_ms = {i["id"]: i["latency_ms"] for i in single["off"]["items"]}
    direct = [i for i in single["adaptive"]["items"] if i["verdict"] is None and i["error"] is None]
    a, o = (sum(i["latency_ms"] for i in direct), sum(off_ms[i["id"]] for i in direct))
    if direct:
        print(f"  the {len(direct)} it served directly: off {o / len(direct):.0f} ms, "
              f"adaptive {a / len(direct):.0f} ms ({a / o:.2f}x)\n")


def mismatch(m: dict) -> str:
    return f"{pct(m['rate'])} ({m['refused_anyway']}/{m['helped']})"


def auc(r: dict) -> str:
    a = r.get("separation", {}).get("auc")  # reports before AUC was measured have none
    return "-" if a is None else f"{a:.3f}"


def dev_table(rows: list, release: str) -> None:
    ms = lambda r: r["dev"]["cost"]["benign"]["latency_ms"]["mean"]
    off_mean = next((ms(r) for label, mode, r in rows if label == release and mode == "off" and "dev" in r), None)
    print(f"| adapter | mode | harmful refusal | benign compliance | allowed, refused anyway | AUC | utility kept | benign latency under load (ms, mean) | vs `off` over {release} |")
    print("|---|---|---|---|---|---|---|---|---|")
    # Utility kept counts against `off` on the same gateway (the base weights, this machine):
    # greedy answers of the small model differ between CPUs (README, "The utility set").
    base_util = next((r["utility"] for label, mode, r in rows if label == release and mode == "off" and "utility" in r), None)
    for label, mode, r in rows:
        d, u = r.get("dev"), r.get("utility")
        dev = (f"{pct(d['harmful_refusal_rate'])} | {pct(d['benign_compliance_rate'])} | "
               f"{mismatch(d['mismatch'])} | {auc(d)}" if d else "- | - | - | -")
        util = kept(u, base_util) if u else "-"
        lat = (f"{ms(r):.0f} | " + (f"{ms(r) / off_mean:.2f}x" if off_mean else "-")) if d else "- | -"
        print(f"| {label} | {mode} | {dev} | {util} | {lat} |")


def kept(u: dict, base) -> str:
    """Of the utility questions `off` answered correctly, the share `u` still answers correctly
    (the whole set where `off` was not measured)."""
    if base is None:
        return f"{pct(u['utility']['rate'])} ({u['utility']['correct']}/{u['utility']['n']})"
    solved = {i["id"] for i in base["items"] if i["correct"]}
    hit = sum(1 for i in u["items"] if i["correct"] and i["id"] in solved)
    return f"{pct(hit / len(solved)) if solved else '-'} ({hit}/{len(solved)})"


def outside_table(rows: list) -> None:
    """The held-out outside requests, by source: hh-rlhf (`hh-`), chatterbot-corpus (`cb-`),
    and both inside wrappers (kind `wrapped`)."""
    print("\n| adapter | mode | hh-rlhf harmful refused | hh-rlhf benign answered | chatterbot answered | "
          "wrapped benign answered | wrapped harmful refused | allowed, refused anyway | AUC | answer tokens, answered benign (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, mode, r in rows:
        o = r.get("outside")
        if not o:
            continue
        ok = [i for i in o["items"] if i["refused"] is not None]
        def rate(pred, want_refused):
            sel = [i for i in ok if pred(i)]
            hit = sum(i["refused"] == want_refused for i in sel)
            return f"{pct(hit / len(sel)) if sel else '-'} ({hit}/{len(sel)})"
        plain = lambda i: i["kind"] != "wrapped"
        benign = [i for i in ok if i["label"] != "refuse" and plain(i) and not i["refused"]]
        # The answer's own tokens: deliberating modes count their reasoning in completion_tokens.
        tokens = sum(i["completion_tokens"] - i["reasoning_tokens"] for i in benign) / max(len(benign), 1)
        print(f"| {label} | {mode} | "
              f"{rate(lambda i: plain(i) and i['id'].startswith('hh') and i['label'] == 'refuse', True)} | "
              f"{rate(lambda i: plain(i) and i['id'].startswith('hh') and i['label'] != 'refuse', False)} | "
              f"{rate(lambda i: plain(i) and i['id'].startswith('cb'), False)} | "
              f"{rate(lambda i: not plain(i) and i['label'] != 'refuse', False)} | "
              f"{rate(lambda i: not plain(i) and i['label'] == 'refuse', True)} | "
              f"{mismatch(o['mismatch'])} | {auc(o)} | {tokens:.0f} |")

if __name__ == "__main__":
    main()

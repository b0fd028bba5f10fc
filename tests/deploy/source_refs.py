"""What the workspace has, read from its sources (Cargo manifests, clap definitions,
configs/gateway.toml), and the checks that a command line or a set of CADA_* variables names
only that. The Dockerfiles, the Kubernetes manifests, the compose file and the systemd units all
name binaries, flags and variables, so all their tests use these."""

from __future__ import annotations

import os
import re
import shlex
import tomllib

from .layout import ROOT



def workspace_packages() -> dict[str, dict]:
    """Workspace member name -> its parsed Cargo.toml."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    out = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        out[manifest["package"]["name"]] = manifest
    return out


def workspace_binaries() -> set[str]:
    bins = set()
    for manifest in workspace_packages().values():
        for b in manifest.get("bin", []):
            bins.add(b["name"])
    return bins


def known_env_vars() -> set[str]:
    """The CADA_* variables the binaries read: clap `env = "..."` and `from_env("...")`."""
    names = set()
    for src in ("gateway/src", "trainer/src", "core/src"):
        for path in (ROOT / src).rglob("*.rs"):
            text = path.read_text()
            names |= set(re.findall(r'\benv\s*=\s*"(CADA_[A-Z0-9_]+)"', text))
            names |= set(re.findall(r'from_env\("(CADA_[A-Z0-9_]+)"\)', text))
    return names


def gateway_config_keys() -> set[str]:
    """Dotted keys of configs/gateway.toml, the example with every key (commented ones too)."""
    keys = set()
    section = ""
    for raw in (ROOT / "configs" / "gateway.toml").read_text().splitlines():
        line = raw.strip()
        m = re.fullmatch(r"#?\s*\[\[?([a-z0-9_.]+)\]?\]", line)
        if m:
            section = m.group(1)
            keys.add(section)
            continue
        m = re.match(r"#?\s*([a-z0-9_]+)\s*=", line)
        if m:
            keys.add(f"{section}.{m.group(1)}" if section else m.group(1))
    # Top-level keys the example only mentions in comments under another table (api_key).
    source = (ROOT / "gateway" / "src" / "config" / "mod.rs").read_text()
    struct = source[source.index("pub struct Config {"):]
    keys |= set(re.findall(r"^    pub ([a-z0-9_]+):", struct[: struct.index("\n}\n")], re.M))
    return keys


def env_var_problems(names: list[str], where: str) -> list[str]:
    known = known_env_vars()
    config_keys = gateway_config_keys()
    problems = []
    for name in names:
        if not name.startswith("CADA_"):
            continue
        if name.startswith("CADA__"):
            key = ".".join(part.lower() for part in name[len("CADA__"):].split("__"))
            if key not in config_keys:
                problems.append(f"{where}: {name} sets '{key}', not a key of configs/gateway.toml")
        elif name not in known:
            problems.append(f"{where}: {name} is read by neither binary")
    return problems


def trainer_cli() -> tuple[set[str], set[str]]:
    """(subcommands with aliases, long flags) of cada-trainer, from trainer/src/cli.rs."""
    text = (ROOT / "trainer" / "src" / "cli.rs").read_text()
    enum = text[text.index("pub enum Command {"):]
    enum = enum[: enum.index("\n}\n")]
    subcommands = {m.lower() for m in re.findall(r"^    ([A-Z][A-Za-z]*)\b", enum, re.M)}
    subcommands |= set(re.findall(r'alias\s*=\s*"([a-z-]+)"', enum))
    # Fields are flags, except flattened argument structs and the subcommand itself.
    types = set(re.findall(r"pub (?:struct|enum) (\w+)", text))
    flags = {"--" + f.replace("_", "-") for f, ty in re.findall(r"pub ([a-z_]+): (\w+)", text) if ty not in types}
    flags |= {"--" + f for f in re.findall(r'long\s*=\s*"([a-z-]+)"', text)}
    flags |= {"--help", "--version"}
    return subcommands, flags


def command_problems(command: str, where: str) -> list[str]:
    """Binaries named in a shell command line are workspace binaries, and cada-trainer's
    subcommand and flags exist."""
    problems = []
    bins = workspace_binaries()
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        for i, word in enumerate(words):
            base = os.path.basename(word)
            if not base.startswith("cada-"):
                continue
            if base not in bins:
                problems.append(f"{where}: '{word}' is not a binary of the workspace ({sorted(bins)})")
                continue
            if base == "cada-trainer":
                subcommands, flags = trainer_cli()
                args = words[i + 1:]
                if not args or args[0] not in subcommands:
                    problems.append(f"{where}: cada-trainer subcommand {args[:1]} is not one of {sorted(subcommands)}")
                for arg in args[1:]:
                    if arg.startswith("--") and arg.split("=")[0] not in flags:
                        problems.append(f"{where}: cada-trainer has no flag {arg}")
    return problems

"""Config files: ``compose`` lists of shared blocks, and configs addressed by name.

A config lists the shared files it builds on under ``compose`` (paths relative to the file);
:func:`expand_compose` turns ``--config X`` into one ``--config`` per composed file, then X,
which jsonargparse merges key by key. ``--config demo`` names a config shipped with arc.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

__all__ = ["CONFIG_FLAGS", "ComposeError", "composed_files", "expand_compose", "packaged_configs",
           "resolve_config_name"]

CONFIG_FLAGS = ("--config", "-c")


class ComposeError(ValueError):
    """A config name or ``compose`` list that names a missing file, or a ``compose`` cycle."""


def composed_files(path: Path, seen: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` preceded by the files its ``compose`` list names (recursively, relative to ``path``),
    in the order they are applied: every shared block first, the file's own settings last."""
    path = path.resolve()
    if path in seen:
        raise ComposeError(f"compose cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise ComposeError(f"config file not found: {path}" + (f" (composed by {seen[-1]})" if seen else ""))
    content = yaml.safe_load(path.read_text()) or {}
    names = content.get("compose", []) if isinstance(content, dict) else []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ComposeError(f"{path}: compose must be a list of config paths, got {names!r}")
    files: list[Path] = []
    for name in names:
        files += composed_files(path.parent / name, (*seen, path))
    return [*files, path]


def packaged_configs() -> Path:
    """The configs that ship with arc: ``arc/_configs`` in an installed wheel, ``configs/`` in a checkout."""
    package = Path(__file__).parent
    installed = package / "_configs"
    return installed if installed.is_dir() else package.parent / "configs"


def resolve_config_name(value: str) -> str:
    """``value`` when it is a file (or inline YAML), else the packaged config it names: ``demo``,
    ``pretrain/demo`` or ``configs/demo.yaml``, so ``arc fit --config demo`` runs from any directory."""
    if Path(value).is_file() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", value):
        return value
    root = packaged_configs()
    name = value.removeprefix("configs/").removesuffix(".yaml")
    if ".." not in name.split("/") and (root / f"{name}.yaml").is_file():
        return str(root / f"{name}.yaml")
    known = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    raise ComposeError(f"config {value!r} not found: no such file here and no packaged config of that name "
                       f"(in {root}: {', '.join(n for n in known if not n.startswith(('base/', 'data/', 'experiments/')))})")


def expand_compose(args: list[str]) -> list[str]:
    """Replace every ``--config FILE`` by one ``--config`` per file it composes, then FILE itself.

    Later files override earlier ones key by key (jsonargparse merges them as several ``--config``),
    so a dataset config holds only what is its own.
    """
    expanded: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, _, value = arg.partition("=")
        if flag in CONFIG_FLAGS and (value or i + 1 < len(args)):
            if not value:
                i += 1
                value = args[i]
            path = Path(resolve_config_name(value))
            if path.suffix in (".yaml", ".yml") and path.is_file():
                for file in composed_files(path):
                    expanded += ["--config", str(file)]
            else:
                expanded += ["--config", value]
        else:
            expanded.append(arg)
        i += 1
    return expanded

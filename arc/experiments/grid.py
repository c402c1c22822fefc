"""A grid file: a base config, seeds, shared overrides and the axes whose product makes the runs.

    base: configs/demo.yaml            # a config file or a packaged config name (``demo``)
    seeds: [0, 1]                      # training seeds (--seed_everything)
    overrides: {data.init_args.batch_size: 64}   # applied to every run
    grid:                              # the product of these lists: one cell per combination
      trainer.max_epochs: [1, 2]
    slurm: {slurm_partition: gpu, timeout_min: 60, gpus_per_node: 1}   # optional, submitit parameters
    metrics: [test/acc, fit/psnr_mean]  # optional, the table's columns (default: every logged metric)

The axis ``config`` (a list of configs) replaces the base config per cell, so one grid compares
methods on the same data (ARC and the baselines; ``base`` may then be left out):

    grid:
      config: [demo, baselines/siren_mlp, baselines/cnn]

:func:`load_grid` reads and checks a file; :func:`expand` turns it into :class:`Run` s, one per
(cell, seed), each with the command line of one ``arc fit`` and a folder under the output directory.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arc.config_files import ComposeError, resolve_config_name

__all__ = ["CONFIG_AXIS", "TRAIN_PROGRAM", "Grid", "GridError", "Run", "axis_label", "expand", "load_grid", "option_value"]

KEYS = ("base", "seeds", "overrides", "grid", "slurm", "metrics")
CONFIG_AXIS = "config"
"""The axis whose values are whole configs (each replaces ``base``)."""
TRAIN_PROGRAM = (sys.executable, "-m", "arc", "fit")
"""The command a run's options follow: ``arc fit`` (``tools/train.py fit``) in this Python."""


class GridError(ValueError):
    """A grid file that cannot describe runs: unknown keys, an empty axis, a missing base config."""


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: ``base`` (a config path), ``seeds``, ``overrides`` and ``axes`` (key -> values)."""

    path: Path
    base: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any]
    axes: dict[str, list[Any]]
    slurm: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()  # the table's metric columns; empty: every logged metric


@dataclass(frozen=True)
class Run:
    """One training run: a grid ``cell`` (axis key -> value) and a ``seed``; ``args`` are its ``arc fit``
    options, ``program`` the command they follow, ``root`` its folder (``trainer.default_root_dir``)."""

    cell: dict[str, Any]
    seed: int
    slug: str
    args: tuple[str, ...]
    root: Path
    program: tuple[str, ...] = TRAIN_PROGRAM

    @property
    def command(self) -> list[str]:
        return [*self.program, *self.args]

    @property
    def name(self) -> str:
        return f"{self.slug}/seed{self.seed}"


def _mapping(content: dict, key: str, where: Path) -> dict[str, Any]:
    value = content.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GridError(f"{where}: {key} must be a mapping of dotted option names to values, got {value!r}")
    return value


def load_grid(path: str | Path) -> Grid:
    """Read and check the grid file ``path``; :class:`GridError` names the first problem."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    content = yaml.safe_load(path.read_text())
    if not isinstance(content, dict):
        raise GridError(f"{path}: a grid file is a mapping with the keys {', '.join(KEYS)}")
    unknown = sorted(set(content) - set(KEYS))
    if unknown:
        raise GridError(f"{path}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(KEYS)})")
    axes = _mapping(content, "grid", path)
    configs = axes.get(CONFIG_AXIS)
    if not isinstance(content.get("base"), str) and not (configs and "base" not in content):
        raise GridError(f"{path}: base must name a config file or a packaged config (e.g. base: demo), "
                        f"unless a grid axis '{CONFIG_AXIS}' lists the configs")
    if isinstance(configs, list) and configs:
        axes[CONFIG_AXIS] = [_config_path(value, path, f"grid.{CONFIG_AXIS}") for value in configs]
    base = _config_path(content["base"], path, "base") if "base" in content else axes[CONFIG_AXIS][0]
    seeds = content.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"{path}: seeds repeat: {seeds}")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: grid.{key} must be a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise GridError(f"{path}: grid.{key} repeats a value: {values}")
    overrides = _mapping(content, "overrides", path)
    both = sorted(set(overrides) & set(axes))
    if both:
        raise GridError(f"{path}: {', '.join(both)} is both an override and a grid axis; keep one")
    metrics = content.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise GridError(f"{path}: metrics must be a list of metric names (e.g. [test/acc, fit/psnr_mean]), got {metrics!r}")
    return Grid(path, base, tuple(seeds), overrides, axes, _mapping(content, "slurm", path), tuple(metrics))


def _config_path(value: Any, where: Path, key: str) -> str:
    """The absolute path of the config ``value`` (a file or a packaged name), or :class:`GridError`."""
    if not isinstance(value, str):
        raise GridError(f"{where}: {key} must name config files or packaged configs, got {value!r}")
    try:
        config = resolve_config_name(value)
    except ComposeError as error:
        raise GridError(f"{where}: {key}: {error}") from None
    if not Path(config).is_file():
        raise GridError(f"{where}: {key}: config not found: {value}")
    return str(Path(config).resolve())

def axis_label(key: str, value: Any) -> str:
    """How a cell's value shows in tables and folder names: a config by its file name, else :func:`option_value`."""
    return Path(value).stem if key == CONFIG_AXIS else option_value(value)


def option_value(value: Any) -> str:
    """A YAML value as one command-line word: strings as they are, anything else as JSON (which the parser reads)."""
    return value if isinstance(value, str) else json.dumps(value)


def _slug(cell: dict[str, Any], short: bool) -> str:
    words = [f"{key.split('.')[-1] if short else key}={axis_label(key, value) if short else option_value(value)}"
             for key, value in cell.items()]
    return re.sub(r"[^A-Za-z0-9._=,-]+", "-", ",".join(words)).strip("-")[:80] or "base"


def _slugs(cells: list[dict[str, Any]]) -> list[str]:
    """Folder names of the cells: the last part of each key with its value, longer only when needed to stay unique."""
    for short in (True, False):
        slugs = [_slug(cell, short) for cell in cells]
        if len(set(slugs)) == len(slugs):
            return slugs
    return [f"{slug}-{hashlib.sha1(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8]}"
            for slug, cell in zip(slugs, cells)]


def expand(grid: Grid, out: Path, program: tuple[str, ...] = TRAIN_PROGRAM) -> list[Run]:
    """The runs of ``grid``, cell by cell (the product of the axes in file order), seed by seed; each run's
    folder is ``out/runs/<cell slug>/seed<S>``; ``program`` runs each (default: ``arc fit``)."""
    keys = list(grid.axes)
    cells = [dict(zip(keys, values)) for values in itertools.product(*(grid.axes[k] for k in keys))]
    runs = []
    for cell, slug in zip(cells, _slugs(cells)):
        options = {key: value for key, value in {**grid.overrides, **cell}.items() if key != CONFIG_AXIS}
        for seed in grid.seeds:
            root = (out / "runs" / slug / f"seed{seed}").resolve()
            args = ["--config", cell.get(CONFIG_AXIS, grid.base), "--seed_everything", str(seed)]
            for key, value in options.items():
                args += [f"--{key}", option_value(value)]
            args += ["--trainer.default_root_dir", str(root)]
            runs.append(Run(cell, seed, slug, tuple(args), root, program))
    return runs

"""Every grid of configs/experiments (the thesis experiments, issue 12) reads as a grid, names a base config that
exists, and (the small variants, which run here) has every run's command line accepted by the training CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arc.augment import build_augmentations
from arc.classifier import TRANSFORM_OPS
from arc.experiments.grid import CONFIG_AXIS, expand, load_grid
from arc.experiments.plan import resolved_config

ROOT = Path(__file__).parents[1] / "configs" / "experiments"
GRIDS = sorted(ROOT.glob("*.yaml"))
SMALL = [g for g in GRIDS if g.stem.endswith("_small")]
THESIS = ("exp1_scaling", "exp3_augment", "exp4_push", "exp5_displaced", "exp6_normalisation", "exp6_latents")


def test_every_thesis_experiment_has_a_full_and_a_small_grid():
    names = {g.stem for g in GRIDS}
    assert {n for t in THESIS for n in (t, f"{t}_small")} <= names


@pytest.mark.parametrize("path", GRIDS, ids=[g.stem for g in GRIDS])
def test_grid_reads_and_its_base_exists(path):
    content = yaml.safe_load(path.read_text())
    assert {"seeds", "grid"} <= set(content) and set(content) <= {"base", "seeds", "overrides", "grid", "slurm", "metrics"}
    assert "base" in content or CONFIG_AXIS in content["grid"]
    grid = load_grid(path)
    assert Path(grid.base).is_file() and grid.seeds and grid.axes
    assert all(isinstance(values, list) and values for values in grid.axes.values())
    if path.stem.removesuffix("_small") in THESIS:  # a comment block names the table and the paper's numbers
        assert path.read_text().startswith(("# Thesis Exp.", "# Small variant of thesis Exp."))
    for key, values in [*((k, [v]) for k, v in grid.overrides.items()), *grid.axes.items()]:
        for value in values:  # the classifier builds these only when it is instantiated, which parsing skips
            if key.endswith(".augment"):
                build_augmentations(value, num_classes=10)
            elif key.endswith("_transform"):
                assert set(value or {}) <= set(TRANSFORM_OPS), f"{key}: {value}"
                build_augmentations(value)


@pytest.mark.parametrize("path", SMALL, ids=[g.stem for g in SMALL])
def test_every_run_of_a_small_grid_is_accepted_by_the_cli(path, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    grid = load_grid(path)
    cells = {run.slug: run for run in expand(grid, tmp_path)}  # one run per cell: seeds only change a number
    for run in cells.values():
        config = resolved_config(run)
        for key, value in {**grid.overrides, **run.cell}.items():
            if key == CONFIG_AXIS:  # a whole config, not an option
                continue
            assert holds(resolved(config, key), value), f"{run.name}: {key} resolved to {resolved(config, key)!r}"


def resolved(config: dict, key: str):
    """The value at a dotted ``key`` of a resolved config."""
    for part in key.split("."):
        config = config[part]
    return config


def holds(found, value) -> bool:
    """Whether the resolved ``found`` carries ``value`` (a typed block may add defaults to a mapping)."""
    if isinstance(value, dict):
        return isinstance(found, dict) and all(k in found and holds(found[k], v) for k, v in value.items())
    return found == value

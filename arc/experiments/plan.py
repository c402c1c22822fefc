"""Check every run's command line before anything starts, and order the runs so that parallel runs
never fit the same cloud store or pretrain the same decoder at the same time.

Two runs share their stores when their resolved ``data`` blocks agree on everything but what only
serves batches (``batch_size``, ``num_workers``, ``predict_split``) and they agree on
``test_after_fit`` (whether the run fits the test split): at least as fine as :mod:`arc.store.keys`,
so runs grouped apart may still share a store, never the other way round. The first pending run of
each group prepares its stores (decoder pretraining, anchoring) and the others start once it ended.
Preparing runs that could write the same files — the same ``data.root`` (decoders and stores live
there), or the same explicit ``data.store`` / ``data.decoder`` path — run one after another.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from arc.experiments.grid import Run

__all__ = ["Plan", "RunConfigError", "plan_runs", "resolved_config"]

SERVING_KEYS = ("batch_size", "num_workers", "predict_split")
PATH_KEYS = ("root", "store", "decoder")


class RunConfigError(ValueError):
    """A run whose command line the training CLI rejects."""


def resolved_config(run: Run) -> dict[str, Any]:
    """The config ``arc fit`` would run for ``run`` (the CLI's own ``--print_config``, in this process);
    :class:`RunConfigError` with the CLI's message when it rejects the command line."""
    from arc.cli import build_cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # this tool's own argv
            build_cli(["fit", *run.args, "--print_config"])
    except SystemExit as stop:
        if stop.code not in (0, None):
            lines = [line for line in err.getvalue().strip().splitlines() if not line.startswith("(--help")]
            raise RunConfigError(f"run {run.name}: " + "\n".join(lines).removeprefix("error: ")) from None
    return yaml.safe_load(out.getvalue())


def store_group(config: dict[str, Any]) -> str:
    """The key of the runs whose stores are the same: the ``data`` block without its serving keys, and
    ``test_after_fit``."""
    data = config.get("data") or {}
    settings = {k: v for k, v in (data.get("init_args") or {}).items() if k not in SERVING_KEYS}
    return json.dumps({"class_path": data.get("class_path"), "init_args": settings,
                       "test_after_fit": config.get("test_after_fit", True)}, sort_keys=True, default=str)


def written_paths(config: dict[str, Any]) -> set[str]:
    """Where a run may pretrain or fit: its data root and any explicit store or decoder path (resolved)."""
    settings = (config.get("data") or {}).get("init_args") or {}
    return {f"{key}:{Path(settings[key]).resolve()}" for key in PATH_KEYS if settings.get(key)}


@dataclass(frozen=True)
class Plan:
    """``prepare``: chains of runs (each chain one after another, chains side by side) that prepare each store;
    ``store_of``: run name -> :func:`store_group`."""

    prepare: list[list[Run]]
    store_of: dict[str, str]

    def rest(self, runs: Sequence[Run], failed: set[str]) -> list[list[Run]]:
        """The chains of the runs not in ``prepare``: one each, except that the runs of a store whose preparer
        failed (in ``failed``, run names) form one chain, so they never fit that store side by side."""
        preparers = {run.name: self.store_of[run.name] for chain in self.prepare for run in chain}
        unprepared = {store for name, store in preparers.items() if name in failed}
        chains: dict[str, list[Run]] = {}
        for run in runs:
            if run.name in preparers:
                continue
            store = self.store_of[run.name]
            chains.setdefault(store if store in unprepared else run.name, []).append(run)
        return list(chains.values())


def plan_runs(runs: Sequence[Run], configs: dict[str, dict[str, Any]]) -> Plan:
    """The plan of the pending ``runs`` from their resolved ``configs`` (run name -> :func:`resolved_config`):
    the first run of each store group prepares it; preparers that share a written path form one chain."""
    store_of = {run.name: store_group(configs[run.name]) for run in runs}
    first: dict[str, Run] = {}
    for run in runs:
        first.setdefault(store_of[run.name], run)
    owner: dict[str, str] = {}  # union-find over runs and paths: connected preparers share a chain

    def find(item: str) -> str:
        while owner.setdefault(item, item) != item:
            item = owner[item]
        return item

    for run in first.values():
        for path in written_paths(configs[run.name]):
            owner[find(path)] = find(run.name)
    chains: dict[str, list[Run]] = {}
    for run in first.values():
        chains.setdefault(find(run.name), []).append(run)
    return Plan(list(chains.values()), store_of)

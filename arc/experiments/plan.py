"""Check every run's command line before anything starts, and order the runs so that parallel runs
never fit the same cloud store or pretrain the same decoder at the same time.

A run's representation is its resolved ``data`` block: the decoder is keyed by the data settings
without the fitting ones (``fit``, ``store``, ``shard_size``), the store by the data settings
without what only serves batches (``batch_size``, ``num_workers``, ``predict_split``) — the same
split as :mod:`arc.store.keys`, a little finer, which only makes the order more cautious. The
first pending run of each store prepares it (decoder pretraining, then anchoring); the preparers of
stores that share a decoder run one after another, and every other run starts only once its store
is prepared.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from arc.experiments.grid import Run

__all__ = ["Plan", "RunConfigError", "plan_runs", "resolved_config"]

SERVING_KEYS = ("batch_size", "num_workers", "predict_split")
FITTING_KEYS = ("fit", "store", "shard_size")


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


def _key(data: dict[str, Any], dropped: Sequence[str]) -> str:
    settings = {k: v for k, v in (data.get("init_args") or {}).items() if k not in dropped}
    return json.dumps({"class_path": data.get("class_path"), "init_args": settings}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Plan:
    """``prepare``: chains of runs (each chain one after another, chains side by side) that prepare each store;
    ``store_of``: run name -> store key; ``decoder_of``: run name -> decoder key."""

    prepare: list[list[Run]]
    store_of: dict[str, str]
    decoder_of: dict[str, str]

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
    """The plan of the pending ``runs`` from their resolved ``configs`` (run name -> :func:`resolved_config`)."""
    store_of, decoder_of = {}, {}
    for run in runs:
        data = configs[run.name].get("data") or {}
        store_of[run.name] = _key(data, SERVING_KEYS)
        decoder_of[run.name] = _key(data, (*SERVING_KEYS, *FITTING_KEYS))
    first: dict[str, Run] = {}
    for run in runs:
        first.setdefault(store_of[run.name], run)
    chains: dict[str, list[Run]] = {}
    for run in first.values():
        chains.setdefault(decoder_of[run.name], []).append(run)
    return Plan(list(chains.values()), store_of, decoder_of)

"""``tools/experiment.py GRID.yaml`` (also ``arc experiment``): run a grid of training runs and tabulate them.

Every run's command line is checked before anything starts; finished runs are skipped; runs that
share a representation share its store, prepared once (:mod:`arc.experiments.plan`); a failed run is
reported and the others go on (exit status 1 when any failed).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from arc.experiments.grid import Grid, GridError, Run, expand, load_grid
from arc.experiments.plan import RunConfigError, plan_runs, resolved_config
from arc.experiments.results import cell_table, log_to_wandb, write_csv, write_markdown, write_plot
from arc.experiments.runner import Launcher, RunResult, SubmititLauncher, execute, finished, run_chain

__all__ = ["main", "parse_args", "run_experiment", "run_grid", "submitit_parameters"]

SLURM_FLAGS = {"partition": ("slurm_partition", str), "account": ("slurm_account", str),
               "time": ("timeout_min", int), "gpus": ("gpus_per_node", int), "cpus": ("cpus_per_task", int),
               "mem_gb": ("mem_gb", float)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of ``tools/experiment.py`` (``--parallel`` at least 1)."""
    parser = argparse.ArgumentParser(prog="tools/experiment.py", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file (configs/experiments/*.yaml)")
    parser.add_argument("--out", type=Path, help="output folder (default: $ARC_RUNS/experiments/<grid name>)")
    parser.add_argument("--parallel", type=int, default=1, help="runs (chains of runs) at once (default 1)")
    parser.add_argument("--executor", choices=("local", "submitit-local", "slurm"), default="local",
                        help="local child processes, submitit's local executor, or Slurm jobs through submitit")
    for flag, (name, kind) in SLURM_FLAGS.items():
        parser.add_argument(f"--slurm-{flag.replace('_', '-')}", dest=f"slurm_{flag}", type=kind,
                            help=f"submitit {name} of each job" + (" (minutes)" if flag == "time" else ""))
    parser.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other submitit parameter (e.g. slurm_qos=high), repeatable")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be >= 1, got {args.parallel}")
    return args


def submitit_parameters(grid: Grid, args: argparse.Namespace) -> dict[str, Any]:
    """The grid's ``slurm:`` block, then ``--slurm-*`` flags and ``--slurm-option KEY=VALUE`` on top."""
    parameters = dict(grid.slurm)
    for flag, (name, _) in SLURM_FLAGS.items():
        if getattr(args, f"slurm_{flag}") is not None:
            parameters[name] = getattr(args, f"slurm_{flag}")
    for option in args.slurm_option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise GridError(f"--slurm-option takes KEY=VALUE, got {option!r}")
        parameters[key] = int(value) if value.isdigit() else value
    return parameters


def launcher(grid: Grid, args: argparse.Namespace, out: Path) -> Launcher:
    """The launcher of ``--executor``: child processes here, or submitit jobs (logs in ``out/submitit``)."""
    if args.executor == "local":
        return run_chain
    cluster = "slurm" if args.executor == "slurm" else "local"
    return SubmititLauncher(out / "submitit", cluster, submitit_parameters(grid, args))


def report(result: RunResult) -> None:
    """One line per finished run: status, name, seconds, and its headline metrics or its error."""
    shown = {k: f"{v:.4f}" for k, v in result.metrics.items() if k in ("test/acc", "fit/psnr_mean")}
    detail = result.error if result.status == "failed" else " ".join(f"{k} {v}" for k, v in shown.items())
    print(f"{result.status:<6} {result.name}  {result.seconds:.1f} s  {detail}", flush=True)


@contextlib.contextmanager
def shared_cores(runs: int) -> Iterator[None]:
    """While ``runs`` > 1 run on this machine at once, child processes get ``OMP_NUM_THREADS`` = cores / runs
    (unless it is set), so they share the cores instead of each starting a thread per core."""
    if runs <= 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // runs))
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def run_grid(grid: Grid, runs: list[Run], args: argparse.Namespace, out: Path) -> dict[str, RunResult]:
    """Run the unfinished ``runs`` (checked first), store-preparing runs first; the results of all ``runs``."""
    results = {run.name: done for run in runs if (done := finished(run)) is not None}
    pending = [run for run in runs if run.name not in results]
    print(f"{len(runs)} runs: {len(results)} finished before, {len(pending)} to run", flush=True)
    if not pending:
        return results
    configs = {run.name: resolved_config(run) for run in pending}  # every command line checked before any starts
    plan = plan_runs(pending, configs)
    launch = launcher(grid, args, out)
    with shared_cores(args.parallel if args.executor != "slurm" else 1):
        prepared = execute(plan.prepare, launch, args.parallel, report)
        failed = {result.name for result in prepared if result.status == "failed"}
        rest = execute(plan.rest(pending, failed), launch, args.parallel, report)
    results.update({result.name: result for result in [*prepared, *rest]})
    return results


def run_experiment(grid: Grid, runs: list[Run], args: argparse.Namespace, out: Path) -> int:
    """Run ``runs`` of ``grid`` and write the results to ``out``; 0 when every run finished, 1 when some failed,
    2 for a bad command line or executor setting (then nothing ran)."""
    start = time.perf_counter()
    try:
        results = run_grid(grid, runs, args, out)
    except (GridError, RunConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_csv(out / "runs.csv", grid, runs, results)
    print(write_markdown(out / "results.md", grid, runs, results))
    write_plot(out / "results.png", grid, runs, results)
    log_to_wandb(grid, *cell_table(grid, runs, results), out / "results.png")
    failed = [r for r in results.values() if r.status == "failed"]
    print(f"{len(runs) - len(failed)}/{len(runs)} runs finished, {len(failed)} failed; {out}/results.md, runs.csv, "
          f"results.png; {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``tools/experiment.py GRID.yaml [--out DIR] [--parallel N] [--executor ...]``: the exit status of :func:`run_experiment`."""
    args = parse_args(argv)
    try:
        grid = load_grid(args.grid)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or Path(os.environ.get("ARC_RUNS", "runs")) / "experiments" / grid.path.stem
    return run_experiment(grid, expand(grid, out), args, out)

"""The results of a grid: ``runs.csv`` (one row per run), ``results.md`` (one row per cell, mean ± std over
seeds), ``results.png`` (the headline metric against the first axis) and, when W&B is online, the table there.
"""
from __future__ import annotations

import csv
import logging
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from arc.experiments.grid import Grid, Run, axis_label
from arc.experiments.runner import RunResult

log = logging.getLogger(__name__)

__all__ = ["HEADLINE", "cell_table", "write_csv", "write_markdown", "write_plot", "log_to_wandb"]

HEADLINE = ("test/acc", "test/acc_macro", "fit/psnr_mean")
"""The metrics the table starts with; every other logged metric follows, except per-class accuracies and
learning rates (:data:`TABLE_SKIPS`), which only the CSV holds."""
TABLE_SKIPS = ("/acc_class/", "lr-")


def metric_names(results: Sequence[RunResult]) -> list[str]:
    """Every metric of ``results``: the headline ones first, then the others in name order."""
    found = {name for result in results for name in result.metrics}
    return [m for m in HEADLINE if m in found] + sorted(found - set(HEADLINE))


def write_csv(path: Path, grid: Grid, runs: Sequence[Run], results: dict[str, RunResult]) -> None:
    """``runs.csv``: the cell's axis values, seed, status, seconds, error and every metric of each run."""
    names = metric_names(list(results.values()))
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*grid.axes, "seed", "status", "seconds", "error", "run_dir", *names])
        for run in runs:
            result = results[run.name]
            writer.writerow([*(axis_label(k, run.cell[k]) for k in grid.axes), run.seed, result.status,
                             f"{result.seconds:.1f}", result.error, result.run_dir,
                             *(result.metrics.get(m, "") for m in names)])


def _summary(values: list[float]) -> str:
    """"mean ± std" (one value alone), 4 decimals below 100 and 1 above, by the mean's size."""
    if not values:
        return "–"
    mean = statistics.mean(values)
    digits = 4 if abs(mean) < 100 else 1
    return f"{mean:.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def cell_table(grid: Grid, runs: Sequence[Run], results: dict[str, RunResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-cell table: axis values, seeds finished of seeds run, mean ± std of each metric."""
    names = list(grid.metrics) or [m for m in metric_names(list(results.values())) if not any(part in m for part in TABLE_SKIPS)]
    cells: dict[str, list[Run]] = {}
    for run in runs:
        cells.setdefault(run.slug, []).append(run)
    rows = []
    for members in cells.values():
        ok = [results[run.name] for run in members if results[run.name].status in ("ok", "done")]
        values = [axis_label(k, members[0].cell[k]) for k in grid.axes]
        rows.append([*values, f"{len(ok)}/{len(members)}",
                     *(_summary([r.metrics[m] for r in ok if m in r.metrics]) for m in names),
                     _summary([r.seconds for r in ok])])
    return [*grid.axes, "n", *names, "seconds"], rows


def write_markdown(path: Path, grid: Grid, runs: Sequence[Run], results: dict[str, RunResult]) -> str:
    """``results.md``: the cell table as markdown (mean ± std over the finished seeds); returns the text."""
    header, rows = cell_table(grid, runs, results)
    lines = [f"# {grid.path.name}", "", f"base `{grid.base}`, seeds {list(grid.seeds)}, mean ± std over seeds", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    failed = [r for r in results.values() if r.status == "failed"]
    if failed:
        lines += ["", "Failed runs:", *(f"- {r.name}: {r.error}" for r in failed)]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def write_plot(path: Path, grid: Grid, runs: Sequence[Run], results: dict[str, RunResult]) -> None:
    """``results.png``: the headline metric (mean, std error bars) against the first axis, one line per value of
    the other axes; a single point when the grid has no axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(list(results.values()))
    metric = next((m for m in ("test/acc", "val/acc") if m in names), names[0] if names else None)
    keys = list(grid.axes)
    lines: dict[str, dict[Any, list[float]]] = {}
    for run in runs:
        result = results[run.name]
        if metric is None or result.status not in ("ok", "done") or metric not in result.metrics:
            continue
        x = axis_label(keys[0], run.cell[keys[0]]) if keys and not _numeric(grid.axes[keys[0]]) else (run.cell[keys[0]] if keys else 0)
        label = ", ".join(f"{k.split('.')[-1]}={axis_label(k, run.cell[k])}" for k in keys[1:])
        lines.setdefault(label, {}).setdefault(x, []).append(result.metrics[metric])
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        xs = list(points)
        means = [statistics.mean(points[x]) for x in xs]
        stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        axis.errorbar(xs, means, yerr=stds, marker="o", capsize=4, label=label or None)
    if keys and _numeric(grid.axes[keys[0]]):
        axis.set_xticks(grid.axes[keys[0]])  # the grid's values, not interpolated ones
    axis.set_xlabel(keys[0] if keys else "")
    axis.set_ylabel(metric or "no finished run")
    axis.set_title(grid.path.name)
    if any(lines):
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def log_to_wandb(grid: Grid, header: list[str], rows: list[list[str]], plot: Path) -> None:
    """Log the cell table and the plot to a W&B run of their own when W&B is online; skip quietly otherwise."""
    from arc.runs import wandb_has_credentials, wandb_reachable

    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or not wandb_has_credentials() \
            or not wandb_reachable():
        return
    import wandb

    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "arc"), job_type="experiment", name=grid.path.stem)
        run.log({"results": wandb.Table(columns=header, data=rows), "results_plot": wandb.Image(str(plot))})
        run.finish()
    except Exception as error:  # the results are on disk already; W&B is a copy
        log.warning("could not log the results to W&B: %s", error)

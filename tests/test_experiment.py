"""The experiment runner: grid expansion and checks, resume, failure isolation, parallel store safety,
the tables and the plot, and submitit's local executor.

The machinery tests run a stand-in training program (:data:`FAKE_TRAIN`, no torch) that takes the
same options as ``arc fit``, "fits" its decoder and store in the data root (failing if another
process fits the same one at that moment) and writes ``metrics.json``; every command line is still
checked by the real CLI. The slow test runs the real ``arc fit`` on a tiny demo grid.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from arc.experiments.grid import GridError, Run, expand, load_grid
from arc.experiments.main import main, parse_args, run_experiment, submitit_parameters
from arc.experiments.plan import RunConfigError, plan_runs, resolved_config
from arc.experiments.results import cell_table, write_plot
from arc.experiments.runner import RunResult, finished

ROOT = Path(__file__).parents[1]

FAKE_TRAIN = '''
import json, os, sys, time
from pathlib import Path
options = dict(zip(sys.argv[1::2], sys.argv[2::2]))
root, data = Path(options["--trainer.default_root_dir"]), Path(options["--data.init_args.root"])
epochs, seed = int(options.get("--trainer.max_epochs", 1)), int(options["--seed_everything"])
steps = int(options.get("--data.init_args.fit.steps", 5))
print("training", epochs, seed, flush=True)
if epochs == 3:
    print("Traceback (most recent call last):\\nRuntimeError: boom at epoch 3", flush=True)
    sys.exit(1)

def fit_once(name):  # what pretraining / anchoring do: once per representation, never two at a time
    done, busy = data / f"{name}.done", data / f"{name}.busy"
    if done.exists():
        return
    try:
        handle = os.open(busy, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        print(f"error: {name} is being fitted by another run at the same time", flush=True)
        sys.exit(1)
    time.sleep(0.5)
    with open(data / "fits.log", "a") as log:
        log.write(name + "\\n")
    done.write_text("")
    os.close(handle)
    busy.unlink()

data.mkdir(parents=True, exist_ok=True)
fit_once("decoder")
fit_once(f"store-{steps}")
versions = [int(p.name[8:]) for p in root.glob("version_*")]
run = root / f"version_{max(versions, default=-1) + 1}"
run.mkdir(parents=True)
with open(data / "trained.log", "a") as log:
    log.write(f"{epochs} {seed} {steps}\\n")
metrics = {"test/acc": 0.5 + 0.1 * epochs + 0.01 * seed, "fit/psnr_mean": 20.0 + steps, "params/classifier": 1000.0}
(run / "metrics.json").write_text(json.dumps(metrics))
'''


def write_grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text.replace("DATA", str(tmp_path / "data")))
    return path


def fake_runs(tmp_path: Path, grid_text: str) -> tuple:
    program = tmp_path / "fake_train.py"
    program.write_text(FAKE_TRAIN)
    grid = load_grid(write_grid(tmp_path, grid_text))
    out = tmp_path / "out"
    return grid, expand(grid, out, program=(sys.executable, str(program))), out


TWO_AXES = """
base: demo
seeds: [0, 1]
overrides: {data.init_args.root: DATA}
grid:
  trainer.max_epochs: [1, 2]
  data.init_args.fit.steps: [5, 6]
"""


def test_a_grid_expands_to_one_run_per_cell_and_seed(tmp_path):
    grid = load_grid(write_grid(tmp_path, TWO_AXES))
    runs = expand(grid, tmp_path / "out")
    assert grid.base == str((ROOT / "configs/demo.yaml").resolve())  # a packaged config name
    assert [r.name for r in runs[:3]] == ["max_epochs=1,steps=5/seed0", "max_epochs=1,steps=5/seed1",
                                          "max_epochs=1,steps=6/seed0"]
    assert len(runs) == 8 and runs[0].cell == {"trainer.max_epochs": 1, "data.init_args.fit.steps": 5}
    args = runs[3].args
    assert args[:4] == ("--config", grid.base, "--seed_everything", "1")
    assert args[args.index("--trainer.max_epochs") + 1] == "1" and args[args.index("--data.init_args.fit.steps") + 1] == "6"
    assert args[-2:] == ("--trainer.default_root_dir", str((tmp_path / "out/runs/max_epochs=1,steps=6/seed1").resolve()))
    assert runs[0].command[1:4] == ["-m", "arc", "fit"]


def test_a_config_axis_compares_whole_configs_and_metrics_picks_the_columns(tmp_path):
    grid = load_grid(write_grid(tmp_path, """
seeds: [0]
overrides: {data.init_args.source: digits}
grid: {config: [demo, baselines/cnn]}
metrics: [test/acc, fit/images_per_s]
"""))
    runs = expand(grid, tmp_path / "out")
    assert [r.name for r in runs] == ["config=demo/seed0", "config=cnn/seed0"]
    assert runs[1].args[:2] == ("--config", str((ROOT / "configs/baselines/cnn.yaml").resolve()))
    assert "--config" not in runs[1].args[2:] and "--data.init_args.source" in runs[1].args
    assert grid.base == runs[0].args[1] and grid.metrics == ("test/acc", "fit/images_per_s")
    results = {run.name: RunResult(run.name, "ok", 1.0, {"test/acc": 0.5, "val/loss": 1.0}) for run in runs}
    header, rows = cell_table(grid, runs, results)
    assert header == ["config", "n", "test/acc", "fit/images_per_s", "seconds"] and rows[1][:3] == ["cnn", "1/1", "0.5000"]


@pytest.mark.parametrize("text, message", [
    ("seeds: [0]\n", "base must name a config file"),
    ("grid: {config: [demo, nothing_here]}\n", "grid.config: config 'nothing_here' not found"),
    ("base: demo\nmetrics: test/acc\n", "metrics must be a list"),
    ("base: demo\nseed: [0]\n", "unknown key.*seed .*valid: base, seeds"),
    ("base: demo\ngrid: {trainer.max_epochs: []}\n", "grid.trainer.max_epochs must be a non-empty list"),
    ("base: configs/nothing_here.yaml\n", "base: config 'configs/nothing_here.yaml' not found"),
    ("base: demo\nseeds: []\n", "seeds must be a non-empty list"),
    ("base: demo\noverrides: {trainer.max_epochs: 1}\ngrid: {trainer.max_epochs: [1, 2]}\n", "both an override and"),
])
def test_a_bad_grid_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path, text))


def test_a_key_the_cli_rejects_stops_the_grid_before_any_run(tmp_path, capsys):
    path = write_grid(tmp_path, "base: demo\ngrid: {trainer.max_epochz: [1, 2]}\n")
    with pytest.raises(RunConfigError, match="max_epochz"):
        resolved_config(expand(load_grid(path), tmp_path / "out")[0])
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "unrecognized arguments: --trainer.max_epochz" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_the_plan_prepares_each_store_once_and_never_two_in_one_place_at_a_time():
    def run(name: str) -> Run:
        return Run({}, 0, name, (), Path(name))

    def config(root: str, fit_steps: int, batch_size: int = 64, store=None) -> dict:
        return {"data": {"class_path": "ARCDataModule", "init_args": {
            "root": root, "fit": {"steps": fit_steps}, "batch_size": batch_size, "store": store}}}

    configs = {"a": config("r1", 5), "b": config("r1", 5, batch_size=32), "c": config("r1", 6), "d": config("r2", 5),
               "e": config("r3", 5, store="/s"), "f": config("r4", 5, store="/s"), "g": config("r1", 6, 16),
               "h": config("r1", 6, 8)}
    runs = [run(n) for n in configs]
    configs = {f"{name}/seed0": value for name, value in configs.items()}
    plan = plan_runs(runs, configs)
    # b, g and h reuse the stores of a and c (the batch size only serves them); a and c write into r1, e and f
    # into the store /s, so each pair prepares one after the other
    assert [[r.slug for r in chain] for chain in plan.prepare] == [["a", "c"], ["d"], ["e", "f"]]
    assert [[r.slug for r in chain] for chain in plan.rest(runs, failed=set())] == [["b"], ["g"], ["h"]]
    chains = plan.rest(runs, failed={"c/seed0"})  # c's store may be unfitted: its runs go one at a time
    assert [[r.slug for r in chain] for chain in chains] == [["b"], ["g", "h"]]


def test_runs_go_on_after_a_failure_and_a_second_call_reruns_nothing(tmp_path, capsys):
    grid, runs, out = fake_runs(tmp_path, TWO_AXES.replace("[1, 2]", "[1, 3]"))
    args = parse_args([str(grid.path), "--parallel", "2"])
    assert run_experiment(grid, runs, args, out) == 1  # the epochs=3 runs fail
    printed = capsys.readouterr().out
    assert "failed max_epochs=3,steps=5/seed0" in printed and "RuntimeError: boom at epoch 3" in printed
    with open(out / "runs.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["ok"] * 4 + ["failed"] * 4
    assert float(rows[1]["test/acc"]) == pytest.approx(0.61) and rows[1]["seed"] == "1"
    assert "boom" in rows[4]["error"] and (out / "runs/max_epochs=3,steps=5/seed0/train.log").is_file()
    trained = (tmp_path / "data/trained.log").read_text()
    assert run_experiment(grid, runs, args, out) == 1  # the finished runs are skipped, the failed ones tried again
    assert (tmp_path / "data/trained.log").read_text() == trained
    assert "8 runs: 4 finished before, 4 to run" in capsys.readouterr().out
    table = (out / "results.md").read_text()
    assert "| 1 | 5 | 2/2 | 0.6050 ± 0.0071 | 25.0000 ± 0.0000 |" in table  # mean ± std over the seeds
    assert "| 3 | 6 | 0/2 | – |" in table and "Failed runs:" in table
    assert (out / "results.png").stat().st_size > 0


def test_parallel_runs_never_fit_one_store_at_the_same_time(tmp_path):
    grid, runs, out = fake_runs(tmp_path, TWO_AXES.replace("[0, 1]", "[0]"))
    assert run_experiment(grid, runs, parse_args([str(grid.path), "--parallel", "4"]), out) == 0
    fits = (tmp_path / "data/fits.log").read_text().split()
    assert sorted(fits) == ["decoder", "store-5", "store-6"]  # each fitted once, by the first run that needs it
    assert len((tmp_path / "data/trained.log").read_text().splitlines()) == 4


def test_submitit_local_executor_runs_the_grid(tmp_path):
    grid, runs, out = fake_runs(tmp_path, "base: demo\nseeds: [0, 1]\noverrides: {data.init_args.root: DATA}\n")
    args = parse_args([str(grid.path), "--executor", "submitit-local", "--parallel", "2", "--slurm-time", "5"])
    assert submitit_parameters(grid, args) == {"timeout_min": 5}
    assert run_experiment(grid, runs, args, out) == 0
    assert [json.loads((run.root / "result.json").read_text())["metrics"]["test/acc"] for run in runs] == [0.6, 0.61]
    assert any((out / "submitit").iterdir())


def test_slurm_options_come_from_the_grid_then_the_flags(tmp_path):
    grid = load_grid(write_grid(tmp_path, "base: demo\nslurm: {slurm_partition: gpu, gpus_per_node: 1}\n"))
    args = parse_args([str(grid.path), "--executor", "slurm", "--slurm-gpus", "2", "--slurm-time", "90",
                       "--slurm-option", "slurm_qos=high"])
    assert submitit_parameters(grid, args) == {"slurm_partition": "gpu", "gpus_per_node": 2, "timeout_min": 90,
                                               "slurm_qos": "high"}


def test_the_plot_has_one_line_per_value_of_the_second_axis(tmp_path):
    grid = load_grid(write_grid(tmp_path, TWO_AXES))
    runs = expand(grid, tmp_path / "out")
    results = {run.name: RunResult(run.name, "ok", 1.0, {"test/acc": 0.1 * run.cell["trainer.max_epochs"] + run.seed})
               for run in runs}
    header, rows = cell_table(grid, runs, results)
    assert header == ["trainer.max_epochs", "data.init_args.fit.steps", "n", "test/acc", "seconds"]
    assert rows[0] == ["1", "5", "2/2", "0.6000 ± 0.7071", "1.0000 ± 0.0000"]
    write_plot(tmp_path / "results.png", grid, runs, results)
    assert (tmp_path / "results.png").stat().st_size > 0


@pytest.mark.slow
def test_the_real_cli_writes_metrics_and_the_table(tmp_path):
    """A tiny run of the demo config on 40 generated shapes through ``arc fit``: metrics.json with the test, classifier and representation metrics."""
    path = write_grid(tmp_path, """
base: demo
seeds: [0]
overrides: {data.init_args.root: DATA, data.init_args.source: shapes,
            data.init_args.source_options: {size: 12, count: {train: 24, val: 8, test: 8}},
            data.init_args.fit.steps: 3, data.init_args.pretrain.steps: 3, data.init_args.pretrain.images: 8,
            trainer.logger: false}
grid: {trainer.max_epochs: [2]}
""")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out/runs/max_epochs=2/seed0/latest/metrics.json").read_text())
    assert {"test/acc", "test/acc_macro", "val/acc", "val/acc_best", "params/classifier", "fit/psnr_mean",
            "repr/params_per_sample", "fit/images_per_s"} <= set(metrics)
    assert metrics["repr/params_per_sample"] == pytest.approx(16 * metrics["repr/latents_mean"])
    assert "| 2 | 1/1 |" in (tmp_path / "out/results.md").read_text()


def test_a_run_counts_as_finished_only_with_the_options_it_ran_with(tmp_path):
    run = Run({}, 0, "base", ("--config", "demo.yaml"), tmp_path)
    record = {"name": run.name, "status": "ok", "seconds": 3.0, "metrics": {"test/acc": 0.5}, "args": list(run.args)}
    (tmp_path / "result.json").write_text(json.dumps(record))
    assert finished(run).status == "done" and finished(run).metrics == {"test/acc": 0.5}
    (tmp_path / "result.json").write_text(json.dumps({**record, "args": ["--config", "other.yaml"]}))
    assert finished(run) is None  # another grid wrote it: run again


def test_slurm_without_sbatch_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    grid, runs, out = fake_runs(tmp_path, "base: demo\noverrides: {data.init_args.root: DATA}\n")
    assert run_experiment(grid, runs, parse_args([str(grid.path), "--executor", "slurm"]), out) == 2
    assert "sbatch, which is not on this machine's PATH" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()

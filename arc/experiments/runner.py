"""Execute runs: each one ``python -m arc fit ...`` (its :attr:`~arc.experiments.grid.Run.command`) in its own process (a crash or an out-of-memory kill
ends that run only), its output in ``<run folder>/train.log``, its outcome in ``<run folder>/result.json``.

A run whose ``result.json`` says ``ok`` is finished and never run again (resume). Chains of runs
(see :mod:`arc.experiments.plan`) go to a launcher: :func:`run_chain` here, or a submitit job per
chain (:class:`SubmititLauncher`: a Slurm cluster, or submitit's local executor); ``parallel``
chains run at once.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from arc.experiments.grid import GridError, Run
from arc.runs import RUN_DIR_ENV, next_run_dir

__all__ = ["Launcher", "RunResult", "SubmititLauncher", "execute", "finished", "run_chain", "run_one"]

RESULT, LOG, METRICS = "result.json", "train.log", "metrics.json"


@dataclass
class RunResult:
    """What became of a run: ``status`` ok (this call), done (an earlier call) or failed; its ``seconds``,
    ``metrics`` (from the run's ``metrics.json``), ``error`` (the log's last error line), ``run_dir`` and
    ``args`` (the options it ran with)."""

    name: str
    status: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    run_dir: str = ""
    args: list[str] = field(default_factory=list)


Launcher = Callable[[Sequence[Run]], list[RunResult]]


def finished(run: Run) -> Optional[RunResult]:
    """The recorded result of ``run`` when an earlier call finished it with the same options (status ``done``),
    else None: a run whose grid changed (another override, another base) runs again."""
    path = run.root / RESULT
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("status") != "ok" or record.get("args") != list(run.args):
        return None
    return RunResult(**{**record, "status": "done"})


def last_error(log: Path) -> str:
    """The last line of ``log`` that names an error, else its last non-empty line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    errors = [line for line in lines if "error" in line.lower() or line.startswith(("Killed", "Traceback"))]
    return (errors or lines or ["no output"])[-1][:300]


def run_one(run: Run) -> RunResult:
    """Train ``run`` in a child process; its metrics come from the run folder's ``metrics.json``."""
    run.root.mkdir(parents=True, exist_ok=True)
    run_dir = next_run_dir(run.root)  # where the CLI will put this run (only this run writes under run.root)
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    command = run.command
    start = time.perf_counter()
    with open(run.root / LOG, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        except OSError as error:  # the program itself cannot start
            log.write(f"error: cannot start {command[0]}: {error}\n")
            code = -1
    seconds = time.perf_counter() - start
    metrics_file = run_dir / METRICS
    if code != 0 or not metrics_file.is_file():
        error = last_error(run.root / LOG) if code != 0 else f"no {METRICS} in {run_dir}"
        return RunResult(run.name, "failed", seconds, error=f"exit status {code}: {error}", run_dir=str(run_dir),
                         args=list(run.args))
    result = RunResult(run.name, "ok", seconds, json.loads(metrics_file.read_text()), run_dir=str(run_dir),
                       args=list(run.args))
    (run.root / RESULT).write_text(json.dumps(asdict(result), indent=1))
    return result


def run_chain(chain: Sequence[Run]) -> list[RunResult]:
    """The runs of ``chain`` one after another (a failed one does not stop the next)."""
    return [run_one(run) for run in chain]


class SubmititLauncher:
    """One submitit job per chain, on ``cluster`` ("slurm", or "local" for submitit's local executor);
    ``parameters`` are submitit's (``timeout_min``, ``gpus_per_node``, ``slurm_partition``, ...)."""

    def __init__(self, folder: Path, cluster: str, parameters: dict[str, Any]) -> None:
        try:
            import submitit
        except ModuleNotFoundError:
            raise GridError("this executor needs submitit: pip install 'arc[cluster]'") from None
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise GridError("--executor slurm submits with Slurm's sbatch, which is not on this machine's PATH "
                            "(run from a login node, or use --executor local / submitit-local)")
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        try:
            self.executor.update_parameters(**{"timeout_min": 24 * 60, **parameters})
        except (NameError, AssertionError, ValueError) as error:
            raise GridError(f"submitit parameters {parameters}: {error}") from None
        self.lock = threading.Lock()  # one submission at a time

    def __call__(self, chain: Sequence[Run]) -> list[RunResult]:
        job_id = "not submitted"
        try:
            with self.lock:
                job = self.executor.submit(run_chain, list(chain))
            job_id = job.job_id
            print(f"submitted job {job_id}: {', '.join(run.name for run in chain)}", flush=True)
            return job.result()
        except Exception as error:  # the submission or the job itself failed (killed, timed out): its runs failed
            message = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
            return [RunResult(run.name, "failed", error=f"job {job_id}: {message}", args=list(run.args)) for run in chain]


def execute(chains: Sequence[Sequence[Run]], launch: Launcher, parallel: int,
            report: Callable[[RunResult], None]) -> list[RunResult]:
    """Run ``chains`` through ``launch``, ``parallel`` at once; ``report`` sees each result as its chain ends."""
    results: list[RunResult] = []

    def one(chain: Sequence[Run]) -> list[RunResult]:
        done = launch(chain)
        for result in done:
            report(result)
        return done

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for done in pool.map(one, chains):
            results.extend(done)
    return results

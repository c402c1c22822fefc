"""Every GPU measurement still open in docs/benchmarks.md, in one run, collected in one JSON file.

    bash tools/device_check.sh --device cuda --out $OUT/device_check.json        # one H200: < 8 min
    bash tools/device_check.sh --device cpu --tiny --out /tmp/device_check.json  # tiny sizes (the test)

Entries of ``results`` (each with the ``command`` that reproduces it, ``status``, ``seconds``, and
``result`` or ``error``):

- ``fit/<case>/pretrain``: render the case's images into an npz (generated data, once) and pretrain
  a decoder on the train images after the fitted ones (``device_check.py pretrain``);
- ``fit/<case>/<precision>``: ``tools/bench_fit.py`` with that decoder, for precision 32, tf32, bf16
  and 16 (images/s, achieved GFLOP/s, matmul peak, PSNR; at 32 the dense and factored engines side
  by side, which ``fit.engine: auto`` needs to choose on CUDA); cases ``strokes28`` (MNIST-like 28x28
  strokes), ``shapes32x3``, ``shapes320x3`` and ``full`` (one --full-size square colour image);
- ``fit/<case>/original``: the re-created original loop (``arc.field.original``, one image at a time by
  autograd) on a few of the case's images on the same device, the original's own setting;
- ``fit/<case>/pretrain-original`` (``shapes320x3`` and ``full``): pretraining on the case's pretrain
  images by the engine, by autograd (``decoder_max_abs_diff``: the hand-written kernels checked on the
  device) and by the original's per-image loop, side by side;
- ``spconv/check``: spconv's submanifold conv against the pure-PyTorch path, forward and backward
  on a random point batch, with timings of both (``device_check.py spconv``); "spconv unavailable"
  when spconv does not import (or the tensors are not on CUDA, where it is never used);
- ``classifier/<case>``: ``tools/bench_classifier.py`` (train, infer, augment) for cifar and imagenette, and
  ``classifier/cifar-deterministic``: the same with ``torch.use_deterministic_algorithms`` (issue 17's switch).

Each group of entries (one fitting case, spconv, the classifier) runs in its own worker
process with a timeout, and each entry inside it under its own alarm timeout: a failed or
timed-out entry becomes a failure record and the run goes on. The JSON is rewritten after every
group, so a run stopped from outside keeps what finished, and a group that cannot start before
the ``--budget-s`` deadline is recorded as skipped. Exit status 1 when any entry did not succeed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

TOOLS = Path(__file__).resolve().parent
PRECISIONS = ("32", "tf32", "bf16", "16")
CLASSIFIER_CASES = ("cifar", "imagenette")
GROUP_SLACK_S = 60.0  # worker start-up (imports, CUDA context) on top of its entries' timeouts
MIN_START_S = 20.0  # a group is not started with less of the budget left


@dataclass(frozen=True)
class FitCase:
    """One fitting benchmark: ``images`` fitted with ``steps`` steps, decoder pretrained on ``pretrain`` others."""

    name: str
    kind: str  # "strokes" (bench_fit's MNIST-like generator) or "shapes"
    size: int  # image side in pixels
    channels: int
    images: int
    steps: int
    pretrain: int
    pretrain_steps: int
    original_images: int  # images the re-created original loop fits (entry ``fit/<case>/original``)
    pretrain_vs_original: bool = False  # entry ``fit/<case>/pretrain-original``: pretraining against the original's loop


@dataclass(frozen=True)
class Entry:
    """One measurement: its result name and its timeout in seconds."""

    name: str
    timeout_s: float


@dataclass(frozen=True)
class Group:
    """Entries run together in one worker process."""

    name: str
    entries: tuple[Entry, ...]

    @property
    def timeout_s(self) -> float:
        return sum(e.timeout_s for e in self.entries) + GROUP_SLACK_S


def fit_cases(tiny: bool, full_size: int) -> list[FitCase]:
    """The fitting cases; GPU sizes chosen so the whole check stays under 8 minutes on one H200.

    Tiny (CPU test): a few images and steps, and the two large cases shrunk to 64² and ``full_size``.
    """
    if tiny:
        return [
            FitCase("strokes28", "strokes", 28, 1, 8, 4, 4, 4, 2),
            FitCase("shapes32x3", "shapes", 32, 3, 8, 4, 4, 4, 2),
            FitCase("shapes320x3", "shapes", 64, 3, 1, 2, 2, 2, 1, True),  # tiny: smaller than the name says
            FitCase("full", "shapes", full_size, 3, 1, 2, 1, 2, 1, True),
        ]
    return [
        FitCase("strokes28", "strokes", 28, 1, 4096, 500, 100, 500, 32),
        FitCase("shapes32x3", "shapes", 32, 3, 4096, 500, 100, 500, 32),
        FitCase("shapes320x3", "shapes", 320, 3, 64, 500, 8, 500, 4, True),
        FitCase("full", "shapes", full_size, 3, 1, 500, 1, 100, 1, True),
    ]


def plan(tiny: bool, full_size: int) -> list[Group]:
    """Groups in running order: the cheap and most used first, the full-resolution image last."""
    cases = {case.name: case for case in fit_cases(tiny, full_size)}
    pre_s, fit_s = (120.0, 120.0) if tiny else (90.0, 60.0)

    def fit_group(name: str, scale: float = 1.0) -> Group:
        entries = [Entry(f"fit/{name}/pretrain", pre_s * scale)]
        entries += [Entry(f"fit/{name}/{p}", fit_s * scale) for p in PRECISIONS]
        entries.append(Entry(f"fit/{name}/original", fit_s * scale))
        if cases[name].pretrain_vs_original:
            entries.append(Entry(f"fit/{name}/pretrain-original", pre_s * scale))
        return Group(f"fit/{cases[name].name}", tuple(entries))

    return [
        Group("spconv", (Entry("spconv/check", 120.0 if tiny else 60.0),)),
        fit_group("strokes28"),
        fit_group("shapes32x3"),
        fit_group("shapes320x3"),
        fit_group("full", 1.0 if tiny else 1.5),
        Group("classifier", (Entry("classifier/cifar", 120.0 if tiny else 60.0),
                             Entry("classifier/cifar-deterministic", 120.0 if tiny else 60.0),
                             Entry("classifier/imagenette", 120.0 if tiny else 90.0))),
    ]


def expected_entries(tiny: bool, full_size: int) -> list[str]:
    """Names of every entry the JSON will hold."""
    return [e.name for g in plan(tiny, full_size) for e in g.entries]


# ---------------------------------------------------------------- measurements (run in workers)


class MeasurementTimeout(Exception):
    """An entry ran past its timeout."""


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`MeasurementTimeout` in the main thread after ``seconds`` (checked between Python bytecodes)."""

    def expire(signum, frame):
        raise MeasurementTimeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tools_module(name: str):
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return __import__(name)


def write_case_npz(case: FitCase, path: Path) -> None:
    """Generated images of ``case`` as an npz source whose train split holds images + pretrain images."""
    need = case.images + case.pretrain
    if case.kind == "strokes":  # bench_fit's generator; its npz has no val, so 10 % of train becomes val
        _tools_module("bench_fit").write_strokes_npz(str(path), count=int((need + 1) * 1.1 / 0.88) + 20)
        return
    from arc.data.sources import open_source

    split = open_source("shapes", size=case.size, channels=case.channels, count=need).split("train")

    def render(i: int) -> np.ndarray:
        return (split[i][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = np.stack(list(pool.map(render, range(need))))
    labels = np.array([int(split[i][1]) for i in range(need)])
    # own val and test splits (one image each), so the whole of x_train stays train
    np.savez(path, x_train=images, y_train=labels, x_val=images[:1], y_val=labels[:1], x_test=images[:1], y_test=labels[:1])


def pretrain_case(case: FitCase, work: Path, device: str) -> dict:
    """Write the case's npz (if missing) and pretrain its decoder -> figures and paths."""
    from arc.data.sources import open_source
    from arc.field import DecoderMeta, FieldConfig, PretrainConfig, pretrain_decoder, save_decoder

    npz, decoder_path = work / f"{case.name}.npz", work / f"{case.name}.safetensors"
    start = time.perf_counter()
    if not npz.exists():
        write_case_npz(case, npz)
    data_s = time.perf_counter() - start
    split = open_source(f"npz:{npz}").split("train")
    need = case.images + case.pretrain
    if len(split) < need:
        raise RuntimeError(f"{npz} has {len(split)} train images, {need} needed")
    others = list(range(case.images, need))
    start = time.perf_counter()
    decoder, psnr = pretrain_decoder([split[i][0] for i in others], FieldConfig(),
                                     PretrainConfig(images=len(others), steps=case.pretrain_steps), "train", others,
                                     device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    pretrain_s = time.perf_counter() - start
    save_decoder(decoder_path, decoder, DecoderMeta.of(decoder, extra={"case": case.name}))
    return {"npz": str(npz), "decoder": str(decoder_path), "image_size": [case.channels, case.size, case.size],
            "pretrain_images": len(others), "pretrain_steps": case.pretrain_steps, "data_s": round(data_s, 3),
            "pretrain_s": round(pretrain_s, 3), "pretrain_psnr_mean": round(float(psnr.mean()), 3)}


def bench_fit_argv(case: FitCase, work: Path, device: str, step: str, tiny: bool) -> list[str]:
    """Arguments of ``tools/bench_fit.py`` for one entry of a case: a precision (decoder from its pretrain entry),
    ``original`` (the re-created original loop on ``original_images`` images, with the dense engine on the same
    images; the full batch's rate is the precision-32 entry's) or ``pretrain-original`` (pretraining on the case's
    pretrain images by the engine, by autograd (the kernels' largest weight difference on the device) and by the
    original's loop)."""
    source = ["--source", f"npz:{work / case.name}.npz", "--device", device, "--json"]
    source += ["--peak-size", "256"] if tiny else []
    if step == "pretrain-original":
        return source + ["--stage", "pretrain", "--images", str(case.pretrain), "--pretrain-steps",
                         str(case.pretrain_steps), "--original-loop", "--reference-loop", "--repeats", "1"]
    images = case.original_images if step == "original" else case.images
    argv = source + ["--images", str(images), "--steps", str(case.steps), "--decoder", f"{work / case.name}.safetensors"]
    if step == "original":
        return argv + ["--engine", "dense", "--original-loop", "--reference-images", str(images)]
    argv += ["--precision", step]
    if step == "32":  # both engines side by side: the figures fit.engine "auto" waits for on CUDA
        argv += ["--engine", "dense,factored"]
    return argv


def bench_classifier_argv(case: str, device: str, tiny: bool) -> list[str]:
    """Arguments of ``tools/bench_classifier.py`` for one case (its default GPU batch; tiny: 1 step of 1 cloud);
    a case named ``<case>-deterministic`` adds ``--deterministic`` (the cost of the deterministic switch)."""
    case, deterministic, _ = case.partition("-deterministic")
    argv = ["--device", device, "--json", "--case", case] + (["--deterministic"] if deterministic else [])
    return argv + (["--batch", "1", "--steps", "1", "--warmup", "0"] if tiny else [])


def run_classifier(argv: list[str]) -> dict:
    """Run bench_classifier in-process -> {"modes": [one record per mode]}."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = _tools_module("bench_classifier").main(argv)
    if code:
        raise RuntimeError(f"bench_classifier exited with {code}")
    return {"modes": [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]}


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float]:
    """(last result, mean ms) of ``repeats`` calls after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, (time.perf_counter() - start) * 1e3 / repeats


def spconv_check(device: str, tiny: bool) -> dict:
    """spconv's SubMConv3d against the pure-PyTorch path on a random 2D point batch (distinct pixels per cloud).

    Compares the forward output and the gradients of feat and weight for a random upstream
    gradient; both paths are timed (forward, forward + backward; mean of 3 after a warm-up).
    """
    from ptv3.point import make_point
    from ptv3.sparse_conv import SubMConv3d, spconv_available, subm_conv_torch, use_spconv

    dev = torch.device(device)
    clouds, points, side, channels = (2, 200, 32, 16) if tiny else (32, 9000, 424, 64)
    g = torch.Generator().manual_seed(0)
    flat = torch.cat([torch.randperm(side * side, generator=g)[:points] for _ in range(clouds)])
    grid = torch.stack([flat // side, flat % side, torch.zeros_like(flat)], 1).to(dev)
    feat = torch.randn(clouds * points, channels, generator=g).to(dev)
    upstream = torch.randn(clouds * points, channels, generator=g).to(dev)
    point = make_point({"coord": grid.float(), "feat": feat, "offset": (torch.arange(1, clouds + 1) * points).to(dev),
                        "grid_coord": grid}, grid_size=1.0)
    torch.manual_seed(0)
    conv = SubMConv3d(channels, channels, 3).to(dev)

    def pure(x: torch.Tensor) -> torch.Tensor:
        return subm_conv_torch(x, point, conv.weight, conv.bias, conv.kernel_size)

    def spconv_path(x: torch.Tensor) -> torch.Tensor:
        return conv(x, point)  # spconv when use_spconv(device); the layout self-check runs on the first call

    def forward_backward(path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        conv.zero_grad(set_to_none=True)
        x = feat.clone().requires_grad_(True)
        out = path(x)
        (out * upstream).sum().backward()
        return out.detach(), x.grad, conv.weight.grad.clone()

    def forward(path) -> torch.Tensor:
        with torch.no_grad():
            return path(feat)

    result: dict[str, Any] = {"device": str(dev), "clouds": clouds, "points": clouds * points, "grid_side": side,
                              "channels": channels, "kernel": 3}
    (ref_out, ref_gx, ref_gw), result["pure_forward_backward_ms"] = _timed(lambda: forward_backward(pure), dev, 3)
    _, result["pure_forward_ms"] = _timed(lambda: forward(pure), dev, 3)
    if not spconv_available():
        result["spconv"] = "spconv unavailable"
        return result
    import spconv

    result["spconv_version"] = getattr(spconv, "__version__", "unknown")
    if not use_spconv(dev):
        result["spconv"] = "spconv unavailable (imports, but is used only for CUDA tensors)"
        return result
    (out, gx, gw), result["spconv_forward_backward_ms"] = _timed(lambda: forward_backward(spconv_path), dev, 3)
    _, result["spconv_forward_ms"] = _timed(lambda: forward(spconv_path), dev, 3)
    layout = SubMConv3d._spconv_layout
    diffs = {
        "forward": (out - ref_out).abs().max() / ref_out.abs().max(),
        "grad_feat": (gx - ref_gx).abs().max() / ref_gx.abs().max(),
        "grad_weight": (gw - ref_gw).abs().max() / ref_gw.abs().max(),
    }
    result.update({f"rel_max_diff_{k}": float(v) for k, v in diffs.items()})
    result["layout"] = layout
    result["agree"] = layout != "off" and all(float(v) <= 1e-3 for v in diffs.values())
    result["spconv"] = "spconv agrees with the pure path" if result["agree"] else "spconv DISAGREES with the pure path"
    return result


def worker(group_name: str, args: argparse.Namespace) -> None:
    """Run one group's entries in this process, appending one JSON record per entry to ``args.records``."""
    group = next(g for g in plan(args.tiny, args.full_size) if g.name == group_name)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cases = {case.name: case for case in fit_cases(args.tiny, args.full_size)}
    py = "python"
    common = ["--device", args.device] + (["--tiny"] if args.tiny else []) + ["--full-size", str(args.full_size)]
    for entry in group.entries:
        kind, _, rest = entry.name.partition("/")
        if kind == "fit":
            case_name, _, step = rest.partition("/")
            case = cases[case_name]
            if step == "pretrain":
                command = f"{py} tools/device_check.py pretrain {case.name} --work {shlex.quote(str(work))} {shlex.join(common)}"
                measure = lambda case=case: pretrain_case(case, work, args.device)  # noqa: E731
            else:
                argv = bench_fit_argv(case, work, args.device, step, args.tiny)
                command = f"{py} tools/bench_fit.py {shlex.join(argv)}"
                measure = lambda argv=argv: _tools_module("bench_fit").main(argv)  # noqa: E731
        elif kind == "spconv":
            command = f"{py} tools/device_check.py spconv {shlex.join(common)}"
            measure = lambda: spconv_check(args.device, args.tiny)  # noqa: E731
        else:
            argv = bench_classifier_argv(rest, args.device, args.tiny)
            command = f"{py} tools/bench_classifier.py {shlex.join(argv)}"
            measure = lambda argv=argv: run_classifier(argv)  # noqa: E731
        record: dict[str, Any] = {"name": entry.name, "command": command, "timeout_s": entry.timeout_s}
        start = time.perf_counter()
        try:
            with alarm(entry.timeout_s):
                record["result"] = measure()
            record["status"] = "ok"
        except MeasurementTimeout as error:
            record.update(status="timeout", error=str(error))
        except Exception as error:  # a failure record instead of an abort
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc()[-4000:])
        record["seconds"] = round(time.perf_counter() - start, 3)
        if args.device.startswith("cuda") and record["status"] != "ok":
            torch.cuda.empty_cache()
        with open(args.records, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"[device_check] {entry.name}: {record['status']} in {record['seconds']:.1f}s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the run (parent process)


def environment(device: str) -> dict:
    """Versions, device name and the date, recorded with the results."""
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
    else:
        env["gpu"] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                           cwd=TOOLS.parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def _write_json(path: Path, report: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run(args: argparse.Namespace) -> int:
    """Run every group in a worker process and collect the records into ``args.out``."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="device_check-"))
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s if args.budget_s is not None else (3600.0 if args.tiny else 450.0)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "tool": "tools/device_check.py",
        "command": "bash tools/device_check.sh " + shlex.join(args.argv),
        "device": args.device,
        "tiny": args.tiny,
        "budget_s": budget,
        "environment": environment(args.device),
        "results": {},
    }
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        report["error"] = "--device cuda but torch sees no CUDA device"
    common = ["--device", args.device, "--work", str(work), "--full-size", str(args.full_size)] + (["--tiny"] if args.tiny else [])
    for group in plan(args.tiny, args.full_size):
        remaining = budget - (time.perf_counter() - start)
        records: dict[str, dict] = {}
        log = work / f"{group.name.replace('/', '_')}.log"
        if remaining < MIN_START_S or "error" in report:
            reason = report.get("error", f"skipped: {remaining:.0f} s of the {budget:.0f} s budget left")
            for e in group.entries:
                records[e.name] = {"name": e.name, "status": "skipped", "error": reason}
        else:
            record_file = work / f"{group.name.replace('/', '_')}.jsonl"
            record_file.unlink(missing_ok=True)
            command = [sys.executable, str(Path(__file__).resolve()), "worker", group.name, "--records", str(record_file), *common]
            timeout = min(group.timeout_s, remaining)
            print(f"[device_check] {group.name} (timeout {timeout:.0f}s)", file=sys.stderr, flush=True)
            with open(log, "w") as handle:
                try:
                    code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout).returncode
                    ended = f"worker exited with {code}"
                except subprocess.TimeoutExpired:
                    ended = f"worker killed after the group timeout of {timeout:.0f} s"
            if record_file.exists():
                for line in record_file.read_text().splitlines():
                    record = json.loads(line)
                    records[record["name"]] = record
            for e in group.entries:
                if e.name not in records:
                    records[e.name] = {"name": e.name, "status": "failed", "error": f"no record: {ended}",
                                       "log_tail": _tail(log)}
        report["results"].update(records)
        report["seconds"] = round(time.perf_counter() - start, 1)
        _write_json(out, report)
    bad = {name: r["status"] for name, r in report["results"].items() if r["status"] != "ok"}
    report["summary"] = {"entries": len(report["results"]), "ok": len(report["results"]) - len(bad), "not_ok": bad}
    report["seconds"] = round(time.perf_counter() - start, 1)
    _write_json(out, report)
    print(json.dumps({"out": str(out), "seconds": report["seconds"], **report["summary"]}), flush=True)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="cuda", help="cuda or cpu")
        p.add_argument("--tiny", action="store_true", help="tiny sizes: few images, few steps (CPU test)")
        p.add_argument("--full-size", type=int, default=None,
                       help="side of the full-resolution image (default 2048; tiny 96)")

    p_run = sub.add_parser("run", help="run every measurement and write the JSON")
    common(p_run)
    p_run.add_argument("--out", required=True, help="the JSON file to write")
    p_run.add_argument("--work", help="folder for generated data and decoders (default: a new temporary folder)")
    p_run.add_argument("--budget-s", type=float, help="no group starts after this many seconds (default 450; tiny 3600)")
    p_worker = sub.add_parser("worker", help="(internal) run one group of entries")
    p_worker.add_argument("group")
    p_worker.add_argument("--records", required=True)
    p_worker.add_argument("--work", required=True)
    common(p_worker)
    p_pre = sub.add_parser("pretrain", help="write one fitting case's npz and pretrain its decoder")
    p_pre.add_argument("case", choices=[c.name for c in fit_cases(False, 0)])
    p_pre.add_argument("--work", required=True)
    common(p_pre)
    p_sp = sub.add_parser("spconv", help="spconv against the pure-PyTorch sparse conv")
    common(p_sp)
    args = parser.parse_args(argv)
    if args.full_size is None:
        args.full_size = 96 if args.tiny else 2048
    if args.mode == "run":
        args.argv = argv[1:]
        return run(args)
    if args.mode == "worker":
        worker(args.group, args)
        return 0
    if args.mode == "pretrain":
        case = next(c for c in fit_cases(args.tiny, args.full_size) if c.name == args.case)
        Path(args.work).mkdir(parents=True, exist_ok=True)
        print(json.dumps(pretrain_case(case, Path(args.work), args.device)))
        return 0
    print(json.dumps(spconv_check(args.device, args.tiny)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

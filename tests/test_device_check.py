"""tools/device_check.sh runs end to end on the CPU at tiny sizes and writes every expected entry."""
import json
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import device_check  # noqa: E402

CASES = ("strokes28", "shapes32x3", "shapes320x3", "full")
PRECISIONS = ("32", "tf32", "bf16", "16")


def test_plan_names_every_open_measurement():
    names = device_check.expected_entries(tiny=False, full_size=2048)
    assert names == device_check.expected_entries(tiny=True, full_size=96)
    wanted = {f"fit/{c}/{p}" for c in CASES for p in ("pretrain", *PRECISIONS, "original")}
    wanted |= {f"fit/{c}/pretrain-original" for c in ("shapes320x3", "full")}
    wanted |= {"spconv/check", "classifier/cifar", "classifier/cifar-deterministic", "classifier/imagenette"}
    assert set(names) == wanted and len(names) == len(wanted)
    assert [g.name for g in device_check.plan(False, 2048)][-2:] == ["fit/full", "classifier"]


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_entry_with_numbers(tmp_path):
    out = tmp_path / "check.json"
    run = subprocess.run(["bash", str(ROOT / "tools" / "device_check.sh"), "--device", "cpu", "--tiny", "--out", str(out),
                          "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:], report.get("summary"))
    env = report["environment"]
    for key in ("torch", "cuda", "date", "gpu", "python"):
        assert key in env
    assert env["torch"] and env["date"]
    results = report["results"]
    assert list(results) == device_check.expected_entries(tiny=True, full_size=96)
    for name, record in results.items():
        assert record["status"] == "ok", (name, record.get("error"))
        assert record["command"].startswith("python tools/") and isinstance(record["seconds"], Number)
    for case in CASES:
        assert results[f"fit/{case}/pretrain"]["result"]["pretrain_s"] >= 0
        for precision in PRECISIONS:
            fit = results[f"fit/{case}/{precision}"]["result"]
            assert fit["precision"] == precision and fit["images"] >= 1
            for key in ("images_per_s", "achieved_gflops", "matmul_peak_gflops", "psnr_mean", "prepare_images_per_s"):
                assert isinstance(fit[key], Number) and fit[key] > 0, (case, precision, key)
            assert f"--precision {precision}" in results[f"fit/{case}/{precision}"]["command"]
        original = results[f"fit/{case}/original"]["result"]
        assert original["original_images"] >= 1 and original["original_images_per_s"] > 0
        assert abs(original["original_psnr_diff"]) < 0.05  # the same fit up to rounding
    for case in ("shapes320x3", "full"):
        pretraining = results[f"fit/{case}/pretrain-original"]["result"]
        assert pretraining["stage"] == "pretrain" and pretraining["original_steps_per_s"] > 0
        assert pretraining["decoder_max_abs_diff"] < 1e-2 and pretraining["reference_steps_per_s"] > 0  # kernels = autograd
    spconv = results["spconv/check"]["result"]
    assert spconv["pure_forward_ms"] > 0 and spconv["pure_forward_backward_ms"] > 0
    assert spconv["spconv"].startswith("spconv unavailable")  # never used for CPU tensors
    for case in ("cifar", "cifar-deterministic", "imagenette"):
        modes = results[f"classifier/{case}"]["result"]["modes"]
        assert [m["mode"] for m in modes] == ["train", "infer", "augment"]
        assert all(isinstance(m["clouds_per_s"], Number) and m["clouds_per_s"] > 0 for m in modes)
        assert all(m["deterministic"] == case.endswith("-deterministic") for m in modes)
    assert report["summary"] == {"entries": len(results), "ok": len(results), "not_ok": {}}


@pytest.mark.parametrize("behaviour, status", [("raise", "failed"), ("hang", "timeout")])
def test_a_failing_measurement_leaves_a_record_and_the_group_goes_on(tmp_path, monkeypatch, behaviour, status):
    group = device_check.Group("spconv", (device_check.Entry("spconv/check", 0.5), device_check.Entry("classifier/cifar", 5.0)))
    monkeypatch.setattr(device_check, "plan", lambda tiny, full_size: [group])

    def broken(device, tiny):
        if behaviour == "raise":
            raise RuntimeError("no such kernel")
        import time

        time.sleep(10)

    monkeypatch.setattr(device_check, "spconv_check", broken)
    monkeypatch.setattr(device_check, "run_classifier", lambda argv: {"modes": [], "argv": argv})
    records = tmp_path / "records.jsonl"
    args = device_check.argparse.Namespace(device="cpu", tiny=True, full_size=96, work=str(tmp_path), records=str(records))
    device_check.worker("spconv", args)
    first, second = (json.loads(line) for line in records.read_text().splitlines())
    assert first["name"] == "spconv/check" and first["status"] == status
    assert ("no such kernel" in first["error"]) == (behaviour == "raise")
    assert second["status"] == "ok" and second["result"]["argv"][:2] == ["--device", "cpu"]

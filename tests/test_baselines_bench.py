"""tools/bench_fit.py --inr: the per-sample INR engine's benchmark runs and reports the usual fields."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_fit  # noqa: E402

from arc.baselines import INRConfig  # noqa: E402


def test_inr_flop_count_matches_hand_count():
    inr = INRConfig(hidden=(32, 32))  # layers 32x2, 32x32, 1x32
    per_pixel = 2 * 1120 + 2 * 1120 + 2 * (1024 + 32)
    assert bench_fit.inr_gflop_per_image(28, 28, inr, 1, 500, 1.0) == pytest.approx((500 * 784 * per_pixel + 784 * 2240) / 1e9)


def test_inr_bench_runs_against_the_plain_loop(capsys):
    result = bench_fit.main([
        "--source", "digits", "--option", "size=12", "--inr", "siren", "--hidden", "8", "--images", "3", "--steps", "4",
        "--peak-size", "128", "--reference-loop", "--json",
    ])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    for key in ("images_per_s", "psnr_mean", "gflop_per_image", "achieved_gflops", "matmul_peak_gflops", "peak_fraction",
                "reference_images_per_s", "speedup", "psnr_diff", "params_per_image"):
        assert key in result
    assert result["widths"] == [2, 8, 8, 1] and abs(result["psnr_diff"]) < 1e-3

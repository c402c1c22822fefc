"""The fitting benchmark tool runs end to end on a tiny source and reports consistent figures."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_fit  # noqa: E402

from arc.field import FieldConfig, FitConfig  # noqa: E402


def test_flop_formula_matches_hand_count():
    field = FieldConfig(latent_dim=32, neighbours=4)
    fit = FitConfig(steps=4)
    # 28x28: 4 steps cover every pixel once (m = 196), then one full decode of 784 pixels
    per_pixel = 2 * 136 * 136 + 4 * 136 + 2 * 136 * 128
    decode = 2 * 136 * 136 + 2 * 136
    assert bench_fit.gflop_per_image(28, 28, field, 1, fit) == pytest.approx((784 * per_pixel + 784 * decode) / 1e9)
    assert bench_fit.supervised_pixels(63, FitConfig(steps=7)) == 63 + 15 + 15  # chunks 15,15,15,15,3


def test_bench_runs_on_small_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = (rng.random((6, 10, 10)) * 255).astype(np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=np.array([0, 1]))
    result = bench_fit.main([
        "--source", f"npz:{path}", "--images", "4", "--steps", "3", "--pretrain", "2", "--pretrain-steps", "2",
        "--peak-size", "256", "--reference-loop", "--reference-images", "2", "--json",
    ])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == result and result["images"] == 4
    for key in ("images_per_s", "psnr_mean", "gflop_per_image", "achieved_gflops", "matmul_peak_gflops",
                "peak_fraction", "prepare_images_per_s", "reference_images_per_s", "speedup", "psnr_diff"):
        assert key in result
    assert abs(result["psnr_diff"]) < 1e-3 and result["prepare_images_per_s"] > 0
    only = bench_fit.main(["--source", f"npz:{path}", "--images", "4", "--prepare-only", "--json"])
    assert set(only) == {"source", "threads", "images", "image_size", "prepare_images_per_s"} and only["images"] == 4


def test_strokes_npz_is_a_valid_source(tmp_path):
    from arc.data.sources import open_source

    path = tmp_path / "strokes.npz"
    assert bench_fit.main(["--make-strokes", str(path)]) == {"written": str(path)}
    train = open_source(f"npz:{path}").split("train")
    image, label = train[0]
    assert tuple(image.shape) == (1, 28, 28) and 0 <= int(label) < 10
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0


@pytest.mark.parametrize("shape", ["2x40", "1x5x4x6"])
def test_bench_fits_generated_one_and_three_dimensional_samples(shape, capsys):
    result = bench_fit.main(["--generated", shape, "--images", "3", "--steps", "3", "--pretrain", "2", "--pretrain-steps", "2",
                             "--peak-size", "128", "--reference-loop", "--reference-images", "2", "--json"])
    sizes = [int(v) for v in shape.split("x")]
    assert result["image_size"] == sizes and result["source"] == f"generated:{shape}" and abs(result["psnr_diff"]) < 1e-3
    per_sample = bench_fit.gflop_per_sample(tuple(sizes[1:]), FieldConfig(), sizes[0], FitConfig(steps=3))
    assert result["gflop_per_image"] == pytest.approx(per_sample, abs=1e-4)
    sample, _ = bench_fit.GeneratedSplit(tuple(sizes), 1)[0]
    assert tuple(sample.shape) == tuple(sizes) and 0.1 <= float(sample.min()) <= float(sample.max()) <= 0.9


def test_bench_compares_engines_in_one_run(capsys):
    result = bench_fit.main(["--source", "digits", "--option", "size=12", "--images", "3", "--steps", "3", "--pretrain", "2",
                             "--pretrain-steps", "2", "--peak-size", "128", "--engine", "dense,factored",
                             "--original-loop", "--reference-images", "2", "--json"])
    engines = result["engines"]
    assert result["original_images"] == 2 and abs(result["original_psnr_diff"]) < 1e-3
    assert set(result["speedup_vs_original"]) == {"dense", "factored"}
    assert result["engine"] == "dense" and set(engines) == {"dense", "factored"} and result["engine_psnr_max_abs_diff"] < 1e-3
    assert engines["factored"]["gflop_per_image"] < engines["dense"]["gflop_per_image"] == result["gflop_per_image"]
    field, fit = FieldConfig(), FitConfig(steps=3)
    assert bench_fit.factored_gflop_per_sample((12, 12), 7, field, 1, fit) == pytest.approx(
        (3 * 4 * 7 * 4 * 32 * 136 + 3 * 36 * (2 * 8 * 136 + 2 * 4 * 136 + 4 * 136) + 144 * (2 * 136 * 136 + 2 * 136)) / 1e9)

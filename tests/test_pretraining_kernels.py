"""Decoder pretraining on hand-written kernels (issue 16) equals the autograd computation up to float rounding."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arc.field import FieldConfig, JointTraining, PretrainConfig
from arc.field.decoder_grad import JointGradient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_pretrain import autograd_step, pretrain_gflop_per_sample  # noqa: E402  the reference: autograd


def smooth_samples(shapes: list[tuple[int, ...]], channels: int, seed: int) -> list[torch.Tensor]:
    """Blurry random samples [C, *S] in [0, 1] (S of 1 to 3 axes)."""
    g = torch.Generator().manual_seed(seed)
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    out = []
    for shape in shapes:
        small = torch.rand(1, channels, *[max(2, s // 3) for s in shape], generator=g)
        out.append(F.interpolate(small, size=shape, mode=modes[len(shape)], align_corners=False)[0])
    return out


SHAPES = {1: [(90,), (70,)], 2: [(10, 12), (9, 8)], 3: [(6, 5, 7), (5, 5, 5)]}


@pytest.mark.parametrize("scale", ["spacing", "per_image"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_hand_written_steps_equal_autograd(dims, scale):
    channels = 2 if dims == 2 else 1
    images = smooth_samples(SHAPES[dims], channels, seed=dims)
    field = FieldConfig(latent_dim=6, neighbours=3, latents_per_pixel=0.2, offset_scale=scale)
    pretrain = PretrainConfig(images=2, steps=6, pixel_fraction=0.5)
    ours, ref = (JointTraining(images, field, pretrain, "train", [0, 1], pixel_budget=20) for _ in range(2))
    ours.gradient = JointGradient(ours.decoder, ours.group, micro_batch=7)  # several blocks per pass
    assert len(ours.group.passes(0)) > 1
    opt_ours, opt_ref = ours.optimiser(), ref.optimiser()
    for step in range(pretrain.steps):
        loss = ours.train_step(step, opt_ours)
        assert float(loss) == pytest.approx(float(autograd_step(ref, step, opt_ref)), rel=1e-5)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-5, atol=5e-7, msg=name)  # moves are ~4e-2
    moved = (ours.latents.detach() - ours.group.latents.detach()).abs().max()
    assert float(moved) > 1e-3  # the steps did train the latents (and with them the decoder)


def test_decoder_bits_do_not_depend_on_the_thread_count():
    images = smooth_samples([(12, 11), (10, 10)], 1, seed=5)
    field = FieldConfig(latent_dim=6, neighbours=3, latents_per_pixel=0.2)
    pretrain = PretrainConfig(images=2, steps=4)
    states = []
    for threads in (1, 3):  # 3 threads run the lanes concurrently (blocks of 4 pixels)
        training = JointTraining(images, field, pretrain, "train", [0, 1], pixel_budget=30)
        training.gradient = JointGradient(training.decoder, training.group, micro_batch=4)
        optimiser = training.optimiser()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for step in range(pretrain.steps):
                training.train_step(step, optimiser)
        finally:
            torch.set_num_threads(before)
        states.append(training.state_dict())
    assert all(torch.equal(states[0][name], value) for name, value in states[1].items())


def test_bench_times_pretraining_against_autograd(capsys):
    import bench_fit

    result = bench_fit.main(["--stage", "pretrain", "--generated", "1x12x12", "--images", "2", "--pretrain", "0",
                             "--pretrain-steps", "3", "--peak-size", "128", "--reference-loop", "--original-loop", "--json"])
    assert result["stage"] == "pretrain" and result["steps"] == 3 and result["speedup"] > 0
    assert result["speedup_vs_original"] > 0 and result["original_psnr_mean"] == pytest.approx(result["psnr_mean"], abs=1e-2)
    for key in ("images_per_s", "steps_per_s", "achieved_gflops", "peak_fraction", "reference_steps_per_s"):
        assert result[key] > 0
    assert result["decoder_max_abs_diff"] < 1e-4 and abs(result["psnr_diff"]) < 1e-3
    field = FieldConfig(latent_dim=32, neighbours=4)
    per_pixel = 4 * 8 * 136 + 6 * 136 + 2 * 4 * 136  # offsets forward and dW1_off, output layer x3, table sums (C = 1)
    per_latent_step = 6 * 4 * 32 * 136  # table, latent gradient, projection gradient
    gflop = pretrain_gflop_per_sample((28, 28), 39, field, 1, PretrainConfig(steps=4), bench_fit.supervised_pixels)
    assert gflop == pytest.approx((784 * per_pixel + 4 * 39 * per_latent_step + 784 * (2 * 136 * 136 + 2 * 136)) / 1e9)

"""The batched per-sample INR engine: per-sample exactness, the hand-written gradient, SIREN init, transfer."""
import math

import pytest
import torch

from arc.baselines import KINDS, INRConfig, INRFitConfig, WeightStack, fit_inrs, fit_stack, init_stack
from arc.baselines.fitting import pixel_rows, psnr_of
from arc.baselines.inr import Grid, encode, forward, forward_backward, pixel_coordinates, sin_cos
from arc.baselines.reference import autograd_fit, plain_forward
from arc.seeding import derive_generator, item_generator


def _images(count: int, size: int = 10, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(count, channels, size + 2, size + 2, generator=g), 3, 1)
    return smooth.clamp(0, 1)


CONFIGS = {kind: INRConfig(kind=kind, hidden=(16, 16), fourier_features=8, fourier_scale=2.0) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_batched_fit_equals_fitting_each_image_alone(kind, fraction):
    images = _images(5, channels=2)
    fit = INRFitConfig(steps=12, lr=1e-3, pixel_fraction=fraction, pixel_budget=150)  # groups of 1-2 images
    together = fit_inrs(images, CONFIGS[kind], fit, "train", [3, 4, 5, 6, 7])
    for row, index in enumerate([3, 4, 5, 6, 7]):
        alone = fit_inrs(images[row : row + 1], CONFIGS[kind], fit, "train", [index])
        torch.testing.assert_close(together.weights[row : row + 1], alone.weights, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.psnr[row : row + 1], alone.psnr, rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_hand_written_gradient_equals_autograd(kind):
    config, images = CONFIGS[kind], _images(3, channels=3)
    stack = init_stack(config, 3, [derive_generator(0, "t", i) for i in range(3)])
    target = pixel_rows(images) * 2 - 1
    grid = Grid(10, 10)
    inputs = grid if kind == "siren" else encode(config, grid.coordinates())
    grad = stack.zeros_like()
    forward_backward(config, stack, inputs, target, grad)
    leaves = WeightStack([w.clone().requires_grad_() for w in stack.weights], [b.clone().requires_grad_() for b in stack.biases])
    out = plain_forward(config, leaves, encode(config, pixel_coordinates(10, 10)))
    out_engine, _ = forward(config, stack, inputs)
    torch.testing.assert_close(out_engine, out.detach(), rtol=1e-4, atol=1e-5)
    (out - target).square().mean(dim=(1, 2)).sum().backward()
    for mine, leaf in zip(grad.tensors(), leaves.tensors()):
        torch.testing.assert_close(mine, leaf.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_engine_follows_the_plain_autograd_loop(fraction):
    config, images = CONFIGS["siren"], _images(4)
    fit = INRFitConfig(steps=10, pixel_fraction=fraction)
    engine = fit_inrs(images, config, fit, "val", range(4))
    generators = [item_generator(fit.seed, "val", i) for i in range(4)]
    stack = init_stack(config, 1, generators)
    order = torch.stack([torch.randperm(100, generator=g) for g in generators])
    psnr = autograd_fit(config, stack, images, fit, order)
    torch.testing.assert_close(engine.weights, stack.flat(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(engine.psnr, psnr, rtol=0, atol=1e-2)


def test_siren_init_statistics():
    config = INRConfig(hidden=(256, 256))
    stack = init_stack(config, 1, [derive_generator(0, "init", i) for i in range(8)])
    first, hidden = stack.weights[0], stack.weights[1]
    assert float(first.abs().max()) <= 1 / 2 and float(hidden.abs().max()) <= math.sqrt(6 / 256) / 30
    assert float(first.std()) == pytest.approx(0.5 / math.sqrt(3), rel=0.05)
    assert float(hidden.std()) == pytest.approx(math.sqrt(6 / 256) / 30 / math.sqrt(3), rel=0.05)
    assert float(stack.biases[1].abs().max()) <= 1 / 16
    # Sitzmann et al.: with this init a sine layer's outputs are arcsine-distributed (std 1/√2) at every depth
    _, saved = forward(config, stack, pixel_coordinates(32, 32), keep=True)
    assert float(saved[-1].std()) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    assert torch.equal(stack.flat()[0], init_stack(config, 1, [derive_generator(0, "init", 0)]).flat()[0])


def test_psnr_rises_with_steps_on_digits():
    from arc.data.sources import open_source

    split = open_source("digits", size=28).split("train")
    images = torch.stack([split[i][0] for i in range(4)])
    psnrs = [float(fit_inrs(images, INRConfig(), INRFitConfig(steps=s), "train", range(4)).psnr.mean()) for s in (0, 15, 60)]
    assert psnrs[0] < psnrs[1] < psnrs[2] and psnrs[2] > 21


def test_weight_transfer_starts_from_the_previous_image():
    config, images = CONFIGS["siren"], _images(4)
    fit = INRFitConfig(steps=8, init="transfer", chains=2)  # chains [0, 1] and [2, 3]
    result = fit_inrs(images, config, fit, "train", range(4))
    shapes = config.shapes(1)
    shared = init_stack(config, 1, [derive_generator(fit.seed, "inr-init")]).flat()
    for row, start in ((0, shared), (1, result.weights[0:1]), (2, shared), (3, result.weights[2:3])):
        start = WeightStack.from_flat(start, shapes)
        fit_stack(config, start, images[row : row + 1], fit)
        torch.testing.assert_close(start.flat(), result.weights[row : row + 1], rtol=1e-4, atol=1e-6)


def test_shared_init_is_one_init_for_every_image():
    config, images = CONFIGS["relu"], _images(3)
    untouched = fit_inrs(images, config, INRFitConfig(steps=0, init="shared"), "train", range(3)).weights
    assert torch.equal(untouched[0], untouched[1]) and torch.equal(untouched[1], untouched[2])
    random = fit_inrs(images, config, INRFitConfig(steps=0, init="random"), "train", range(3)).weights
    assert not torch.equal(random[0], random[1])
    stack = WeightStack.from_flat(random, config.shapes(1))
    assert torch.equal(stack.flat(), random)
    assert psnr_of(config, stack, images).shape == (3,)


def test_the_dwsnets_siren_flag():
    from arc.baselines import INRError
    from arc.baselines.weight_store import weight_store_key

    config = INRConfig(hidden=(32, 32), dwsnets=True)
    stack = init_stack(config, 1, [derive_generator(0, "init", i) for i in range(64)])
    bound = math.sqrt(6 / 2) / 30  # the first sine layer initialised like the later ones
    assert bound / 2 < float(stack.weights[0].abs().max()) <= bound
    assert float(stack.weights[1].abs().max()) <= math.sqrt(6 / 32) / 30
    assert 1 / math.sqrt(32) / 2 < float(stack.weights[2].abs().max()) <= 1 / math.sqrt(32)  # nn.Linear's default
    assert not stack.biases[0].any() and not stack.biases[1].any() and stack.biases[2].any()
    pixels = torch.tensor([0.0, 0.25, 1.0])
    assert config.to_fit_space(pixels).tolist() == [-0.5, -0.25, 0.5] and torch.equal(config.from_fit_space(config.to_fit_space(pixels)), pixels)
    with pytest.raises(INRError, match="dwsnets is a SIREN variant"):
        INRConfig(kind="relu", dwsnets=True)
    fit = INRFitConfig(steps=5)
    assert weight_store_key("src", INRConfig(hidden=(8, 8)), fit, 3) == "0399b063dec59e3c"  # other stores keep their keys
    assert weight_store_key("src", INRConfig(hidden=(8, 8), dwsnets=True), fit, 3) != "0399b063dec59e3c"

    images = _images(4)  # the engine (hand-written gradient, grid first layer) follows autograd on this variant too
    small = INRConfig(hidden=(16, 16), dwsnets=True)
    fit = INRFitConfig(steps=10, lr=5e-4, init="shared")
    engine = fit_inrs(images, small, fit, "val", range(4))
    start = init_stack(small, 1, [derive_generator(fit.seed, "inr-init")]).select(torch.zeros(4, dtype=torch.long))
    psnr = autograd_fit(small, start, images, fit)
    torch.testing.assert_close(engine.weights, start.flat(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(engine.psnr, psnr, rtol=0, atol=1e-2)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "float64"])
def test_sin_cos_matches_torch_in_every_layout(layout):
    angles = torch.randn(3, 50, 16, generator=torch.Generator().manual_seed(0)) * 40  # SIREN-sized angles
    if layout == "transposed":
        angles = angles.transpose(1, 2)  # not contiguous: the torch path
    elif layout == "float64":
        angles = angles.double()
    expected_sin, expected_cos = angles.sin(), angles.cos()
    sin, cos = sin_cos(angles.clone())
    torch.testing.assert_close(sin, expected_sin, rtol=0, atol=2e-6)
    torch.testing.assert_close(cos, expected_cos, rtol=0, atol=2e-6)
    work = angles.clone()
    sin, none = sin_cos(work, want_cos=False, inplace=True)
    assert none is None and sin.data_ptr() == work.data_ptr()
    torch.testing.assert_close(work, expected_sin, rtol=0, atol=2e-6)

"""Colour transform, gradient norm, latent count and position sampling."""
import math

import pytest
import torch
import torch.nn.functional as F

from arc.field import FieldConfig, FieldInputError, from_fit_space, gradient_norm, latent_count, sample_positions, to_fit_space
from arc.seeding import item_generator


def _gen(i: int = 0) -> torch.Generator:
    return item_generator(0, "train", i)


@pytest.mark.parametrize("mode", ["standardise", "unit"])
@pytest.mark.parametrize("channels", [1, 3])
def test_colour_round_trip(mode, channels):
    image = torch.rand(channels, 7, 9)
    x, mean, std = to_fit_space(image, mode)
    assert mean.shape == std.shape == (channels,)
    torch.testing.assert_close(from_fit_space(x, mean, std), image)
    if mode == "standardise":
        torch.testing.assert_close(x.mean(dim=(1, 2)), torch.zeros(channels), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.reshape(channels, -1).std(dim=1), torch.ones(channels))
    else:
        assert torch.equal(x, image) and torch.equal(std, torch.ones(channels))


def test_colour_constant_image_uses_min_std():
    x, mean, std = to_fit_space(torch.full((1, 4, 4), 0.3), "standardise")
    assert float(std) == pytest.approx(1e-3, rel=1e-6)
    assert bool((x == x.flatten()[0]).all()) and float(x.abs().max()) < 1e-3


def test_colour_rejects_nan_and_bad_mode():
    image = torch.rand(1, 5, 5)
    image[0, 2, 2] = float("nan")
    with pytest.raises(FieldInputError, match="NaN"):
        to_fit_space(image, "standardise")
    with pytest.raises(FieldInputError, match="colour mode"):
        to_fit_space(torch.rand(1, 5, 5), "hsv")


def test_gradient_norm_matches_sobel_reference():
    image = torch.rand(3, 6, 8)
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    padded = F.pad(image[None], (1, 1, 1, 1), mode="replicate")[0]
    total = torch.zeros(6, 8)
    for c in range(3):
        for kernel in (sobel, sobel.t()):
            g = torch.zeros(6, 8)
            for i in range(6):
                for j in range(8):
                    g[i, j] = (padded[c, i : i + 3, j : j + 3] * kernel).sum()
            total += g.square()
    torch.testing.assert_close(gradient_norm(image), total.sqrt())


def test_gradient_of_constant_image_is_zero():
    assert torch.count_nonzero(gradient_norm(torch.full((1, 5, 5), 0.7))) == 0


def test_latent_count_rules():
    field = FieldConfig(neighbours=4, latents_per_pixel=0.05)
    assert latent_count(28, 28, 784, field) == 39  # floor(0.05 * 784)
    assert latent_count(20, 30, 600, field) == 30  # float rounding does not lose one
    assert latent_count(28, 28, 10, field) == 10  # capped at non-zero-gradient pixels
    assert latent_count(28, 28, 2, field) == 4  # floored at n
    assert latent_count(5, 5, 25, field) == 4  # floor(1.25) = 1 -> n
    assert latent_count(2, 2, 0, field) == 4  # exactly n pixels
    assert latent_count(28, 28, 784, FieldConfig(latent_count=25, reference_pixels=784)) == 25
    assert latent_count(28, 28, 7, FieldConfig(latent_count=25, reference_pixels=784)) == 7
    with pytest.raises(FieldInputError, match="fewer than the 4 neighbours"):
        latent_count(1, 3, 3, field)


def test_positions_follow_gradient_and_have_no_duplicates():
    image = torch.zeros(1, 40, 40)
    image[:, 10:30, 10:30] = 1.0  # gradient only near the square's border
    field = FieldConfig(latents_per_pixel=0.05)
    pos = sample_positions(image, field, _gen())
    g = gradient_norm(image)
    assert pos.shape == (80, 2) and pos.dtype == torch.float32
    flat = (pos[:, 0] * 40 + pos[:, 1]).long()
    assert flat.unique().numel() == 80
    assert bool((g.flatten()[flat] > 0).all())


def test_positions_capped_and_floored_and_constant():
    field = FieldConfig(neighbours=4, latents_per_pixel=0.5)
    image = torch.zeros(1, 10, 10)
    image[0, 0, 0] = 1.0  # 4 non-zero-gradient pixels (the corner's 2x2 neighbourhood)
    g = gradient_norm(image)
    nonzero = int((g > 0).sum())
    pos = sample_positions(image, field, _gen())
    assert pos.shape[0] == max(nonzero, 4)
    image = torch.zeros(1, 10, 10)
    image[0, 0, 9] = 1.0
    pos = sample_positions(image, FieldConfig(neighbours=8, latents_per_pixel=0.5), _gen())
    flat = (pos[:, 0] * 10 + pos[:, 1]).long()
    assert pos.shape[0] == 8 and flat.unique().numel() == 8  # 4 gradient pixels + 4 uniform ones
    assert set(torch.nonzero(gradient_norm(image).flatten() > 0).flatten().tolist()) <= set(flat.tolist())
    const = sample_positions(torch.full((3, 6, 7), 0.5), FieldConfig(neighbours=5), _gen())
    assert const.shape == (5, 2) and (const[:, 0] * 7 + const[:, 1]).unique().numel() == 5


def test_positions_deterministic_and_seed_dependent():
    image = torch.rand(3, 16, 16)
    field = FieldConfig(latents_per_pixel=0.1)
    a = sample_positions(image, field, _gen(1))
    b = sample_positions(image, field, _gen(1))
    c = sample_positions(image, field, _gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_positions_prefer_high_gradient():
    # left half has gradient 10x larger than the right half: sampling follows g
    image = torch.zeros(1, 32, 64)
    image[0, :, :32] = torch.arange(32).float()[None] * 1.0  # ramp, constant gradient
    image[0, :, 32:] = 32 + torch.arange(32).float()[None] * 0.1
    g = gradient_norm(image)
    counts = torch.zeros(2)
    for seed in range(20):
        pos = sample_positions(image, FieldConfig(latents_per_pixel=0.02), item_generator(seed, "train", 0))
        counts[0] += int((pos[:, 1] < 31).sum())
        counts[1] += int((pos[:, 1] > 33).sum())
    assert counts[0] > 4 * counts[1]
    assert math.isfinite(float(g.sum()))


def test_sampling_beyond_the_multinomial_category_limit():
    # topk-based sampling has no category limit; check a 4200x4100 image (17.2M > 2^24 pixels)
    image = torch.zeros(1, 4200, 4100)
    image[0, 100:200, 100:200] = 1.0
    pos = sample_positions(image, FieldConfig(latent_count=50, reference_pixels=4200 * 4100), _gen())
    assert pos.shape == (50, 2) and bool((pos[:, 0] < 202).all())

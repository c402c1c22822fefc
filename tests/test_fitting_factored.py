"""The factored engine (fit.engine = "factored") equals the dense engine and autograd, in D = 1, 2, 3."""
from types import SimpleNamespace

import pytest
import torch

from arc.field import FieldConfig, FieldGroup, FitConfig, LatentGradient, fit_clouds, new_decoder
from arc.field.factored import FactoredGradient
from arc.field.fitting import latent_gradient


def _group(shape, channels, scale, budget=37, count=3):
    field = FieldConfig(latent_dim=6, latents_per_pixel=0.25, offset_scale=scale)
    g = torch.Generator().manual_seed(len(shape) * 10 + channels)
    group = FieldGroup([torch.rand(channels, *shape, generator=g) for _ in range(count)], field, "train",
                       list(range(count)), 0, 0.5, budget)
    return group, new_decoder(field, channels, seed=0, dims=len(shape))


@pytest.mark.parametrize("scale", ["spacing", "per_image"])
@pytest.mark.parametrize("shape,channels", [((40,), 2), ((9, 11), 1), ((9, 11), 3), ((4, 5, 6), 2)])
def test_factored_step_equals_dense_and_autograd(shape, channels, scale):
    group, decoder = _group(shape, channels, scale)
    latents = (torch.randn_like(group.latents) * 0.3).requires_grad_(True)
    for step in range(2):
        passes = group.passes(step)
        dense, factored = torch.zeros_like(latents), torch.zeros_like(latents)
        dense_loss = LatentGradient(decoder, group, micro_batch=13).step(latents.detach(), dense, passes, loss=True)
        factored_loss = FactoredGradient(decoder, group, micro_batch=13).step(latents.detach(), factored, passes, loss=True)
        latents.grad = None
        sum(group.loss(decoder, latents, piece) for piece in passes).backward()
        torch.testing.assert_close(factored, dense, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(factored, latents.grad, rtol=1e-4, atol=1e-7)
        assert float(factored_loss) == pytest.approx(float(dense_loss), rel=1e-6)


def test_a_block_of_a_large_image_reads_a_few_latents(monkeypatch):
    """A large image's rows are in Z-order, so a block's table holds a small part of the image's latents (random
    pixels would read most of them); the blocks' index tables invert each other and the step equals the dense
    engine's."""
    import arc.field.group as group_module

    widest = {}
    for name, threshold in (("permutation", 10**9), ("z-order", 0)):
        monkeypatch.setattr(group_module, "LOCAL_ORDER_PIXELS", threshold)
        group, decoder = _group((48, 64), 1, "spacing", budget=10**6, count=1)
        gradient = FactoredGradient(decoder, group, micro_batch=64)
        blocks = [block for piece in group.passes(0) for block in gradient.blocks(piece)]
        widest[name] = max(block.latents.numel() for block in blocks)
    assert widest["z-order"] < len(group.latents) / 10 < widest["permutation"] / 2
    for block in blocks:
        nbr = group.nbr[block.rows].long()
        assert torch.equal(block.latents[block.gather.long() // decoder.neighbours], nbr)
        ends = torch.cat([block.scatter_offsets[1:], torch.tensor([block.scatter.numel()])]).long()
        for row in range(0, block.latents.numel() * decoder.neighbours, 7):
            readers = block.scatter[block.scatter_offsets[row] : ends[row]].long()
            assert torch.equal(readers, (block.gather == row).any(1).nonzero()[:, 0])
    latents = torch.randn_like(group.latents) * 0.3
    dense, factored = torch.zeros_like(latents), torch.zeros_like(latents)
    LatentGradient(decoder, group, micro_batch=64).step(latents, dense, group.passes(0))
    gradient.step(latents, factored, group.passes(0))
    torch.testing.assert_close(factored, dense, rtol=1e-5, atol=1e-8)


def test_fitting_with_either_engine_gives_the_same_clouds():
    field = FieldConfig(latent_dim=8, latents_per_pixel=0.1)
    images = [torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    decoder = new_decoder(field, 1, seed=1)
    results = [fit_clouds(images, decoder, field, FitConfig(steps=20, pixel_budget=60, engine=engine), "train", [0, 1, 2])
               for engine in ("dense", "factored")]
    torch.testing.assert_close(results[1].clouds.lat, results[0].clouds.lat, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[1].psnr, results[0].psnr, atol=1e-3, rtol=0)


def test_the_engine_is_a_checked_setting_outside_the_store_key():
    before = {"steps": 500, "lr": 5e-3, "pixel_fraction": 0.25, "precision": "32", "seed": 0}  # the key's fit settings so far
    assert FitConfig().engine == "auto"
    assert FitConfig().result_settings() == before == FitConfig(engine="factored", pixel_budget=5).result_settings()
    assert before == FitConfig(engine="dense").result_settings()
    with pytest.raises(ValueError, match="fit.engine must be one of"):
        FitConfig(engine="sparse")
    group, decoder = _group((9, 11), 1, "spacing")
    assert isinstance(latent_gradient("factored", decoder, group), FactoredGradient)
    assert isinstance(latent_gradient("dense", decoder, group), LatentGradient)


def test_auto_picks_the_engine_measured_faster_for_the_device():
    import arc.field.fitting as fitting

    group, decoder = _group((9, 11), 1, "spacing")
    assert fitting.resolve_engine("auto", group) == "factored"  # the CPU
    assert isinstance(latent_gradient("auto", decoder, group), FactoredGradient)
    assert fitting.resolve_engine("dense", group) == "dense"
    on_cuda = SimpleNamespace(device=torch.device("cuda"), latents=group.latents)
    assert fitting.resolve_engine("auto", on_cuda) == "dense"  # until GPU figures exist

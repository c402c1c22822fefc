"""fit.schedule: the latents' learning rate over the steps, its place in the store key, and the fit it gives."""
import pytest
import torch

from arc.field import FieldConfig, FieldGroup, FitConfig, new_decoder
from arc.field.fitting import fit_group
from arc.store.keys import store_key


def _group(field: FieldConfig) -> FieldGroup:
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(1, 10, 12, generator=g) for _ in range(2)]
    return FieldGroup(images, field, "train", [0, 1], 0, 0.5, 10**6)


def test_a_constant_schedule_keeps_the_store_keys_and_cosine_makes_new_ones():
    constant, cosine = FitConfig(), FitConfig(schedule="cosine")
    assert "schedule" not in constant.result_settings()
    assert cosine.result_settings() == {**constant.result_settings(), "schedule": "cosine"}
    field = {"latent_dim": 32}
    assert store_key("src", field, constant.result_settings(), "d") != store_key("src", field, cosine.result_settings(), "d")
    with pytest.raises(ValueError, match="fit.schedule must be one of"):
        FitConfig(schedule="linear")


def test_the_cosine_fit_follows_autograd_with_torch_s_cosine_annealing():
    field = FieldConfig(latent_dim=6, latents_per_pixel=0.2)
    decoder = new_decoder(field, 1, seed=2)
    fit = FitConfig(steps=12, lr=0.05, pixel_fraction=0.5, schedule="cosine")
    engine = _group(field)
    fit_group(engine, decoder, fit)

    reference = _group(field)
    latents = reference.latents.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([latents], lr=fit.lr)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, fit.steps)
    for step in range(fit.steps):
        optimiser.zero_grad()
        sum(reference.loss(decoder, latents, piece) for piece in reference.passes(step)).backward()
        optimiser.step()
        annealing.step()
    assert optimiser.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(engine.latents, latents.detach(), rtol=1e-4, atol=1e-6)

    constant = _group(field)
    fit_group(constant, decoder, FitConfig(steps=12, lr=0.05, pixel_fraction=0.5))
    assert (constant.latents - engine.latents).abs().max() > 1e-3  # the schedule changes the fit

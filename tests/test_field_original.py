"""The original implementation's loops (arc.field.original), the speed references of bench_fit, give the engines' results."""
import torch

from arc.field import FieldConfig, FitConfig, PretrainConfig, fit_clouds, new_decoder, pretrain_decoder
from arc.field.original import fit_one_at_a_time, pretrain_image_by_image

FIELD = FieldConfig(latent_dim=8, latents_per_pixel=0.1)


def _images(count: int) -> list[torch.Tensor]:
    return [torch.rand(1, 11, 13, generator=torch.Generator().manual_seed(i)) for i in range(count)]


def test_fitting_one_image_at_a_time_by_autograd_gives_the_engine_s_psnr():
    decoder, fit = new_decoder(FIELD, 1, seed=4), FitConfig(steps=15, lr=0.02)
    engine = fit_clouds(_images(3), decoder, FIELD, fit, "train", [5, 6, 7])
    original = fit_one_at_a_time(_images(3), decoder, FIELD, fit, "train", [5, 6, 7])
    torch.testing.assert_close(original, engine.psnr, rtol=0, atol=1e-3)
    assert all(p.requires_grad for p in decoder.parameters())  # frozen during the loop only


def test_pretraining_image_by_image_gives_the_engine_s_decoder():
    pretrain = PretrainConfig(images=3, steps=8, lr=0.01)
    engine, engine_psnr = pretrain_decoder(_images(3), FIELD, pretrain, "train", [0, 1, 2])
    original, original_psnr = pretrain_image_by_image(_images(3), FIELD, pretrain, "train", [0, 1, 2])
    for mine, theirs in zip(original.state_dict().values(), engine.state_dict().values()):
        # the decoder gradient is (1 + 1/N) Σ∇L_i there: Adam ignores the scale except where |g| ~ eps (a few weights
        # whose gradients are ~1e-9 then move by a fraction of one step, lr)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=pretrain.lr / 2)
    torch.testing.assert_close(original_psnr, engine_psnr, rtol=0, atol=1e-3)

"""PatchInit: the ridge map from fit-space patches to latents, and the starting latents it writes into a group."""
import json
import sys
from pathlib import Path

import pytest
import torch

from arc.cloud import CloudBatch
from arc.field import FieldConfig, FieldGroup, FieldInputError
from arc.field.colour import to_fit_space_batch
from arc.field.latent_init import PatchInit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

FIELD = FieldConfig(latent_dim=4, latents_per_pixel=0.1)


def _clouds(images, weight, radius):
    """Clouds whose latents are exactly the linear map ``weight`` of their patches, at random positions."""
    g = torch.Generator().manual_seed(0)
    pos, lat, counts = [], [], []
    probe = PatchInit(weight, radius, "standardise")
    for image in images:
        h, w = image.shape[1:]
        p = torch.stack([torch.randint(0, h, (30,), generator=g), torch.randint(0, w, (30,), generator=g)], 1).float()
        pos.append(p)
        lat.append(probe.latents(image, p))
        counts.append(30)
    n = len(images)
    return CloudBatch(pos=torch.cat(pos), lat=torch.cat(lat), offset=torch.tensor(counts).cumsum(0), label=torch.zeros(n, dtype=torch.long),
                      size=torch.tensor([list(im.shape[1:]) for im in images]), index=torch.arange(n),
                      colour_mean=torch.zeros(n, 2), colour_std=torch.ones(n, 2))


def test_the_ridge_map_recovers_a_linear_map_of_the_patches():
    images = [torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    weight = torch.randn(2 * 9 + 1, 4, generator=torch.Generator().manual_seed(5))  # radius 1: 2 x 3 x 3 + 1
    learned = PatchInit.learn(images, _clouds(images, weight, 1), "standardise", radius=1, ridge=1e-8)
    torch.testing.assert_close(learned.weight, weight, rtol=1e-3, atol=1e-3)


def test_patches_are_the_fit_space_values_around_the_position():
    image = torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(2))
    fit_space = to_fit_space_batch(image[None], "standardise")[0][0, 0]
    features = PatchInit(torch.zeros(10, 4), 1, "standardise").features(image, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    torch.testing.assert_close(features[0, :9], fit_space[1:4, 2:5].reshape(-1))
    torch.testing.assert_close(features[1, :9].reshape(3, 3)[1:, 1:], fit_space[:2, :2])  # zero padding outside
    assert features[1, :3].abs().sum() == 0 and bool((features[:, 9] == 1).all())


def test_start_writes_each_image_s_starting_latents_into_the_group():
    images = [torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    init = PatchInit(torch.randn(10, FIELD.latent_dim, generator=torch.Generator().manual_seed(1)), 1, FIELD.colour)
    group = FieldGroup(images, FIELD, "train", [0, 1], 0, 0.25, 10**6)
    init.start(group, images)
    first = int(group.latent_offset[0])
    torch.testing.assert_close(group.latents[:first].detach(), init.latents(images[0], group.pos[:first]))
    torch.testing.assert_close(group.latents[first:].detach(), init.latents(images[1], group.pos[first:]))
    with pytest.raises(FieldInputError, match="reads images"):
        init.latents(torch.rand(1, 20), torch.zeros(1, 1))


def test_the_benchmark_compares_both_starts(tmp_path, capsys):
    import bench_latent_init

    from arc.field import new_decoder
    from arc.field.decoder import save_decoder

    save_decoder(tmp_path / "decoder.safetensors", new_decoder(FieldConfig(), 1, seed=0))
    result = bench_latent_init.main(["--source", "digits", "--option", "size=12", "--decoder", str(tmp_path / "decoder.safetensors"),
                                     "--learn-images", "6", "--learn-steps", "3", "--images", "3", "--steps", "2,4"])
    assert set(result["psnr_mean"]) == {"uniform", "patch"} and set(result["psnr_mean"]["patch"]) == {"2", "4"}
    decoder, _ = _pretrained(FieldConfig(), count=2, steps=2)
    save_decoder(tmp_path / "pretrained.safetensors", decoder)
    capsys.readouterr()
    result = bench_latent_init.main(["--source", "digits", "--option", "size=12", "--decoder",
                                     str(tmp_path / "pretrained.safetensors"), "--learn-images", "6", "--learn-steps", "3",
                                     "--images", "3", "--steps", "2"])
    assert set(result["psnr_mean"]) == {"uniform", "patch", "pretrained"}
    assert result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_patches_are_ordered_as_unfold_orders_them():
    image = torch.rand(3, 7, 8, generator=torch.Generator().manual_seed(4))
    pos = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 7.0]])
    features = PatchInit(torch.zeros(3 * 25 + 1, 2), 2, "standardise").features(image, pos)
    fit_space = to_fit_space_batch(image[None], "standardise")[0]
    columns = torch.nn.functional.unfold(torch.nn.functional.pad(fit_space, (2,) * 4), 5)[0]  # [C 25, H W]
    torch.testing.assert_close(features[:, :-1], columns[:, (pos[:, 0] * 8 + pos[:, 1]).long()].t())


def test_the_map_hash_follows_its_weights_radius_and_colour():
    weight = torch.randn(10, 4, generator=torch.Generator().manual_seed(3))
    start = PatchInit(weight, 1, "standardise")
    assert start.hash() == PatchInit(weight.clone(), 1, "standardise").hash()
    assert len({start.hash(), PatchInit(weight + 1e-3, 1, "standardise").hash(), PatchInit(weight, 1, "unit").hash()}) == 3


def _pretrained(field: FieldConfig, count: int = 6, size: int = 12, steps: int = 60):
    from arc.data.sources import open_source
    from arc.field import PretrainConfig, pretrain_decoder

    split = open_source("digits", size=size).split("train")
    images = [split[i][0] for i in range(count)]
    decoder, _ = pretrain_decoder(images, field, PretrainConfig(images=count, steps=steps), "train", list(range(count)))
    return decoder, split


def test_pretraining_learns_the_map_and_the_checkpoint_keeps_it_outside_the_hash(tmp_path):
    from arc.field.decoder import DecoderMeta, load_decoder, save_decoder

    decoder, _ = _pretrained(FIELD)
    start = decoder.latent_start
    assert start is not None and start.weight.shape == (25 + 1, FIELD.latent_dim) and start.colour == FIELD.colour
    save_decoder(tmp_path / "d.safetensors", decoder)
    loaded, meta = load_decoder(tmp_path / "d.safetensors")
    assert loaded.latent_start.hash() == start.hash() and loaded.latent_start.radius == start.radius
    bare = DecoderMeta.of(decoder)
    decoder.latent_start = None
    assert DecoderMeta.of(decoder).hash == bare.hash == meta.hash  # the map is not part of the decoder's hash
    save_decoder(tmp_path / "bare.safetensors", decoder)
    assert load_decoder(tmp_path / "bare.safetensors")[0].latent_start is None


def test_a_decoder_of_1d_signals_carries_no_map():
    from arc.field import PretrainConfig, pretrain_decoder

    signals = [torch.rand(1, 60, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    decoder, _ = pretrain_decoder(signals, FIELD, PretrainConfig(images=2, steps=3), "train", [0, 1])
    assert decoder.latent_start is None


def test_fit_init_patch_starts_from_the_map_and_fits_better_in_few_steps():
    from dataclasses import replace

    from arc.field import FitConfig, fit_clouds, fit_group
    from arc.field.fitting import cloud_settings

    field = FieldConfig(latent_dim=16, latents_per_pixel=0.1)
    decoder, split = _pretrained(field, count=8, size=16, steps=100)
    images = [split[i][0] for i in range(8, 14)]
    indices = list(range(8, 14))
    uniform, patch = FitConfig(steps=15), FitConfig(steps=15, init="patch")
    fitted = fit_clouds(images, decoder, field, patch, "train", indices)
    group = FieldGroup(images, field, "train", indices, patch.seed, patch.pixel_fraction, patch.pixel_budget)
    decoder.latent_start.start(group, images)
    torch.testing.assert_close(fitted.psnr, fit_group(group, decoder, patch), rtol=0, atol=1e-4)
    base = fit_clouds(images, decoder, field, uniform, "train", indices)
    assert float(fitted.psnr.mean()) > float(base.psnr.mean()) + 1.0, (fitted.psnr, base.psnr)  # about 2.4 dB here
    assert "init" not in cloud_settings(uniform, decoder, field)
    assert cloud_settings(patch, decoder, field) == {**uniform.result_settings(), "init": "patch",
                                                      "init_hash": decoder.latent_start.hash()}
    with pytest.raises(FieldInputError, match="colour mode"):
        fit_clouds(images, decoder, replace(field, colour="unit"), patch, "train", indices)
    decoder.latent_start = None
    with pytest.raises(FieldInputError, match="fit.init 'patch'.*carries none"):
        fit_clouds(images, decoder, field, patch, "train", indices)
    fit_clouds(images[:1], decoder, field, replace(uniform, steps=1), "train", indices[:1])  # uniform needs no map


def test_fit_init_is_checked_and_enters_the_result_settings_only_when_not_uniform():
    from arc.field import FitConfig

    assert "init" not in FitConfig().result_settings()
    assert FitConfig(init="patch").result_settings()["init"] == "patch"
    with pytest.raises(ValueError, match="fit.init"):
        FitConfig(init="zeros")

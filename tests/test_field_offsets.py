"""Decoder offsets: the dataset scale s (1/sqrt(rho) or sqrt(reference_pixels / latent_count)) or per-image standardisation."""
import hashlib
import json
import math
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from arc.field import (
    FieldConfig,
    FieldGroup,
    FieldInputError,
    FitConfig,
    decode_queries,
    decoder_hash,
    fit_clouds,
    load_decoder,
    new_decoder,
    pixel_grid,
    save_decoder,
)
from arc.field.decoder import FORMAT, _state_bytes
from arc.field.offsets import cloud_offset_statistics, offset_statistics
from arc.store import decoder_key, store_key


def test_spacing_from_density_is_unchanged():
    assert FieldConfig().spacing == 1.0 / math.sqrt(0.05)
    assert FieldConfig(latents_per_pixel=0.1, reference_pixels=None).spacing == 1.0 / math.sqrt(0.1)


def test_a_numeric_offset_scale_is_the_dataset_constant():
    field = FieldConfig(offset_scale=20)
    assert field.spacing == 20.0 and field.offset_mode == "spacing" and asdict(field) == asdict(FieldConfig(offset_scale=20.0))
    assert FieldConfig(latent_count=25, offset_scale=7.5).spacing == 7.5  # no reference area needed
    assert new_decoder(field, 1, seed=0).offset_scale == "spacing"
    group, raw = _group(FieldConfig(latent_dim=4, neighbours=4, latents_per_pixel=0.1, offset_scale=20))
    assert torch.equal(group.off, raw / 20.0)


def test_spacing_follows_latent_count_and_its_reference_area():
    field = FieldConfig(latent_count=25, reference_pixels=784)
    assert field.spacing == pytest.approx(math.sqrt(784 / 25))  # 5.6 px, whatever latents_per_pixel says
    assert FieldConfig(latent_count=25, reference_pixels=784, latents_per_pixel=0.5).spacing == field.spacing
    assert FieldConfig(latent_count=100, reference_pixels=784).spacing == pytest.approx(2.8)


@pytest.mark.parametrize("kwargs, message", [
    ({"latent_count": 25}, "needs field.reference_pixels"),
    ({"reference_pixels": 784}, "only with latent_count"),
    ({"latent_count": 50, "reference_pixels": 49}, "at most one latent per pixel"),
    ({"offset_scale": "per_pixel"}, "offset_scale must be"),
    ({"offset_scale": 0}, "positive number of pixels"),
    ({"offset_scale": math.inf}, "positive number of pixels"),
])
def test_invalid_reference_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldConfig(**kwargs)


@pytest.mark.parametrize("other", [
    FieldConfig(latent_count=25, reference_pixels=1024),
    FieldConfig(latent_count=25, reference_pixels=784, offset_scale="per_image"),
    FieldConfig(latent_count=25, reference_pixels=784, offset_scale=6.0),
])
def test_offset_settings_are_part_of_the_store_and_decoder_keys(other):
    base = FieldConfig(latent_count=25, reference_pixels=784)
    assert asdict(base)["reference_pixels"] == 784 and asdict(base)["offset_scale"] == "spacing"
    assert store_key("src", asdict(base), {}, "h") != store_key("src", asdict(other), {}, "h")
    assert decoder_key("src", asdict(base), {}) != decoder_key("src", asdict(other), {})


def _group(field: FieldConfig, sizes=((12, 12), (20, 9)), pad: int = 0) -> tuple[FieldGroup, torch.Tensor]:
    """Random images (the last one centred on a black canvas ``pad`` pixels wider each side) -> (group, raw offsets)."""
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(1, h, w, generator=g) for h, w in sizes]
    images[-1] = torch.nn.functional.pad(images[-1], (pad, pad, pad, pad))
    group = FieldGroup(images, field, "train", [0, 1], seed=0, pixel_fraction=0.5, pixel_budget=10**6)
    width = group.sizes[group.image, 1]
    query = torch.stack([group.pixel // width, group.pixel % width], 1).float()
    raw = (group.pos[group.nbr.long()] - query[:, None, :]).reshape(query.shape[0], -1)  # latent - pixel [px]
    return group, raw


def test_default_offsets_are_raw_offsets_over_the_spacing():
    field = FieldConfig(latent_dim=4, neighbours=4, latents_per_pixel=0.1)
    group, raw = _group(field)
    assert torch.equal(group.off, raw / field.spacing)  # bit for bit what the fit has always used


def test_per_image_offsets_are_standardised_image_by_image():
    field = FieldConfig(latent_dim=4, neighbours=4, latents_per_pixel=0.1, offset_scale="per_image")
    group, raw = _group(field, sizes=((12, 12), (12, 12)), pad=15)
    for b in range(2):
        off, own = group.off[group.image == b].double(), raw[group.image == b].double()
        assert float(off.mean()) == pytest.approx(0.0, abs=1e-6) and float(off.std()) == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(off, (own - own.mean()) / own.std(), atol=1e-6, rtol=1e-6)
    mean, std = offset_statistics(raw, group.image, 2)
    assert float(std[1]) > 2 * float(std[0])  # empty background: far-away pixels widen the offsets
    clouds = group.clouds()
    for b in range(2):  # decoding recomputes the same statistics from the cloud alone
        pos = clouds.pos[clouds.starts()[b] : clouds.offset[b]]
        stats = cloud_offset_statistics(pos, *clouds.size[b].tolist(), field.neighbours)
        torch.testing.assert_close(torch.stack(stats), torch.stack([mean[b], std[b]]))


@pytest.mark.parametrize("field", [
    FieldConfig(latent_dim=4, neighbours=4, latent_count=12, reference_pixels=144),  # s = sqrt(12) px for both sizes
    FieldConfig(latent_dim=4, neighbours=4, latent_count=12, reference_pixels=144, offset_scale="per_image"),
])
def test_decoding_scales_offsets_as_fitting_did(field):
    group, raw = _group(field)
    if field.offset_scale == "spacing":
        torch.testing.assert_close(group.off, raw / math.sqrt(12.0))  # one dataset scale for mixed sizes
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        group.latents.normal_(generator=g)
    decoder = new_decoder(field, 1, seed=0)
    assert decoder.offset_scale == field.offset_scale
    clouds = group.clouds()
    counts = clouds.size[:, 0] * clouds.size[:, 1]
    queries = torch.cat([pixel_grid(int(h), int(w)) for h, w in clouds.size.tolist()])
    out = decode_queries(decoder, clouds, queries, torch.cumsum(counts, 0), field.spacing, field.neighbours, chunk=50)
    expected = torch.zeros_like(out)
    starts = (torch.cumsum(counts, 0) - counts)[group.image]
    for piece in group.all_passes():
        sl = slice(piece.start, piece.stop)
        expected[starts[sl] + group.pixel[sl]] = group.predict(decoder, group.latents, piece)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_the_decoder_carries_its_offset_scale(tmp_path):
    spacing = new_decoder(FieldConfig(), 1, seed=0)
    per_image = new_decoder(FieldConfig(offset_scale="per_image"), 1, seed=0)
    assert decoder_hash(spacing) == hashlib.sha256(_state_bytes(spacing)).hexdigest()  # default hashes unchanged
    assert decoder_hash(per_image) != decoder_hash(spacing)  # same weights, other inputs
    save_decoder(tmp_path / "p.safetensors", per_image)
    loaded, meta = load_decoder(tmp_path / "p.safetensors")
    assert loaded.offset_scale == meta.offset_scale == "per_image" and meta.hash == decoder_hash(per_image)
    # a checkpoint written before the option (no offset_scale in its metadata) is a spacing decoder
    tensors = {k: v.contiguous() for k, v in spacing.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={
        "format": FORMAT, "latent_dim": "32", "neighbours": "4", "channels": "1",
        "hash": decoder_hash(spacing), "meta": json.dumps({})})
    assert load_decoder(tmp_path / "old.safetensors")[0].offset_scale == "spacing"
    with pytest.raises(FieldInputError, match="offset_scale"):
        fit_clouds([torch.rand(1, 8, 8)], per_image, FieldConfig(), FitConfig(steps=1), "train", [0])

"""The field in D = 1, 2, 3 spatial dimensions (issue 13): 2-D results unchanged, 1-D and 3-D sampling,
neighbours, offsets, gradients, fitting, decoding, decoder records, store manifests and keys, PTv3 input."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from arc.cloud import CloudBatch, CloudError
from arc.data.clouds import CloudDataset
from arc.field import (
    Decoder,
    DecoderMeta,
    FieldConfig,
    FieldInputError,
    FitConfig,
    PretrainConfig,
    decode_queries,
    decoder_hash,
    fit_clouds,
    from_fit_space,
    gradient_norm,
    load_decoder,
    nearest_latents,
    new_decoder,
    pretrain_decoder,
    render,
    sample_grid,
    sample_positions,
    save_decoder,
)
from arc.field.fitting import LatentGradient
from arc.field.group import FieldGroup
from arc.seeding import item_generator
from arc.store import CloudStore, StoreError, decoder_key, store_key
from arc.store.layout import MANIFEST

FIELD = FieldConfig(latent_dim=8, latents_per_pixel=0.2)


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


# -- 2-D: the results of before D existed --------------------------------------------------------------

# Computed with the code of 145d866 (before the field had a D) by the scenario below: integer tables exactly,
# float results to rounding (the bits were equal on the machine that recorded them).
BEFORE = {
    "spacing": ("40652b8a789f860e", "b526303a8a231eec", "72ca4a77d09ca3d6", 7019.464459359646, 1464.0139359519235,
                [11.436553955078125, 10.740357398986816, 10.649420738220215], -5.746148703023209, 110.15659822647285,
                260.7146283984184),
    "per_image": ("40652b8a789f860e", "b526303a8a231eec", "72ca4a77d09ca3d6", 10644.941787806805, 1464.0139359519235,
                  [11.409366607666016, 10.681611061096191, 10.598823547363281], -5.801844374916982, 111.56652792709065,
                  263.29146656394005),
}


@pytest.mark.parametrize("scale", ["spacing", "per_image"])
def test_two_d_results_are_those_of_before(scale):
    g = torch.Generator().manual_seed(7)
    images = [torch.rand(1, 12, 10, generator=g), torch.rand(1, 9, 9, generator=g), torch.rand(1, 40, 37, generator=g)]
    field = FieldConfig(latent_dim=8, latents_per_pixel=0.2, offset_scale=scale)
    pos, nbr, pixel, off, target, psnr, lat_sum, lat_abs, rendered = BEFORE[scale]
    group = FieldGroup(images, field, "val", [3, 4, 5], 11, 0.25, 1000)  # 296 latents: the tree search too
    assert (_sha(group.pos), _sha(group.nbr), _sha(group.pixel)) == (pos, nbr, pixel)
    assert float(group.off.double().abs().sum()) == pytest.approx(off, rel=1e-9)
    assert float(group.target.double().abs().sum()) == pytest.approx(target, rel=1e-9)
    result = fit_clouds(images, new_decoder(field, 1, seed=1), field, FitConfig(steps=20, pixel_budget=200), "val", [3, 4, 5])
    assert result.psnr.tolist() == pytest.approx(psnr, abs=1e-4)
    assert float(result.clouds.lat.double().sum()) == pytest.approx(lat_sum, rel=1e-5)
    assert float(result.clouds.lat.double().abs().sum()) == pytest.approx(lat_abs, rel=1e-5)
    image = render(new_decoder(field, 1, seed=1), result.clouds.cloud(0), field.spacing, field.neighbours, scale=2)[0]
    assert float(image.double().sum()) == pytest.approx(rendered, rel=1e-5)


def test_two_d_names_keep_their_keys_and_hashes():
    assert FIELD.spacing_for(2) == FIELD.spacing == 1 / math.sqrt(0.2)
    assert store_key("src", {"a": 1}, {}, "h") == store_key("src", {"a": 1}, {}, "h", dims=2)
    assert len({store_key("src", {"a": 1}, {}, "h", dims=d) for d in (1, 2, 3)}) == 3
    assert decoder_key("src", {}, {}) == decoder_key("src", {}, {}, 2) != decoder_key("src", {}, {}, 3)
    two, one = new_decoder(FIELD, 1, seed=3), new_decoder(FIELD, 1, seed=3, dims=1)
    assert two.dims == 2 and DecoderMeta.of(two).to_json()["dims"] == "2"
    assert one.in_features == FIELD.neighbours * (FIELD.latent_dim + 1) and two.in_features == 4 * (8 + 2)


# -- sampling, neighbours and offsets in 1-D and 3-D -----------------------------------------------------


def test_spacing_is_the_d_th_root():
    assert FIELD.spacing_for(1) == pytest.approx(5.0) and FIELD.spacing_for(3) == pytest.approx(0.2 ** (-1 / 3))
    counted = FieldConfig(latent_count=10, reference_pixels=1000)
    assert counted.spacing_for(1) == pytest.approx(100.0) and counted.spacing_for(3) == pytest.approx(100 ** (1 / 3))
    assert FieldConfig(offset_scale=7.0).spacing_for(1) == 7.0
    with pytest.raises(ValueError, match="1, 2 or 3"):
        FIELD.spacing_for(4)


def test_gradient_norm_is_sobel_in_one_and_three_dimensions():
    x = torch.rand(2, 3, 17, dtype=torch.float64)
    padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    reference = ((padded[..., 2:] - padded[..., :-2]) / 2).square().sum(1).sqrt()
    torch.testing.assert_close(gradient_norm(x, 1), reference.float())
    volume = torch.rand(2, 6, 5, 7)
    d, s = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])
    kernels = torch.stack([torch.einsum("i,j,k->ijk", *[d if a == axis else s for a in range(3)]) / 32 for axis in range(3)])
    padded = torch.nn.functional.pad(volume[None], (1, 1, 1, 1, 1, 1), mode="replicate")[0]
    grads = torch.nn.functional.conv3d(padded[:, None], kernels[:, None])  # [C, 3, D, H, W] (cross-correlation)
    torch.testing.assert_close(gradient_norm(volume, 3), grads.square().sum((0, 1)).sqrt(), rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(gradient_norm(torch.full((1, 4, 4, 4), 0.3), 3)) == 0
    with pytest.raises(FieldInputError, match="3-D sample"):
        gradient_norm(torch.rand(4, 4), 3)


@pytest.mark.parametrize("shape", [(50,), (6, 7, 5)])
def test_positions_are_distinct_grid_points(shape):
    image = torch.rand(2, *shape)
    pos = sample_positions(image, FIELD, item_generator(0, "train", 1))
    assert pos.shape == (math.floor(0.2 * math.prod(shape) + 1e-9), len(shape))
    assert bool((pos >= 0).all()) and bool((pos < torch.tensor(shape)).all()) and bool((pos == pos.round()).all())
    assert len({tuple(p) for p in pos.tolist()}) == pos.shape[0]
    with pytest.raises(FieldInputError, match="fewer than the 4 neighbours"):
        sample_positions(torch.rand(1, 3), FIELD, item_generator(0, "train", 1))


@pytest.mark.parametrize("dims,k", [(1, 40), (1, 300), (3, 50), (3, 400)])
def test_nearest_latents_in_d_dimensions_order_by_distance_then_index(dims, k):
    rng = np.random.default_rng(dims * 1000 + k)
    extent = 60 if dims == 1 else 9
    pos = torch.from_numpy(rng.integers(0, extent, size=(k, dims)).astype(np.float32))  # many ties and duplicates
    queries = torch.from_numpy(rng.integers(-2, extent + 2, size=(200, dims)).astype(np.float32))
    found = nearest_latents(pos, queries, 4)
    d2 = ((queries[:, None, :].double() - pos[None].double()) ** 2).sum(-1)
    expected = np.lexsort((np.broadcast_to(np.arange(k), d2.shape), d2.numpy()), axis=1)[:, :4]
    assert np.array_equal(found.numpy(), expected)


@pytest.mark.parametrize("shape", [(37,), (5, 4, 6)])
def test_offsets_of_the_pixel_table_are_latent_minus_point(shape):
    images = [torch.rand(1, *shape), torch.rand(1, *shape)]
    group = FieldGroup(images, FIELD, "train", [0, 1], 0, 0.5, 1000)
    dims = len(shape)
    assert group.dims == dims and group.pos.shape[1] == dims and group.off.shape[1] == dims * FIELD.neighbours
    grid = sample_grid(shape)
    query = grid[group.pixel]
    raw = (group.pos[group.nbr.long()] - query[:, None, :]).reshape(-1, dims * FIELD.neighbours)
    torch.testing.assert_close(group.off, raw / FIELD.spacing_for(dims))
    for b in range(2):  # each point's neighbours are its nearest latents, in order
        rows = group.image == b
        start = int(group.latent_offset[b]) - group.clouds().counts()[b]
        local = group.nbr[rows].long() - start
        cloud = group.pos[start : int(group.latent_offset[b])]
        assert torch.equal(local, nearest_latents(cloud, query[rows], FIELD.neighbours))


# -- gradients, fitting and decoding ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40,), (4, 5, 6)])
def test_hand_written_gradient_matches_autograd(shape):
    field = FieldConfig(latent_dim=6, latents_per_pixel=0.25)
    group = FieldGroup([torch.rand(2, *shape), torch.rand(2, *shape)], field, "train", [0, 1], 0, 0.5, 37)
    decoder = new_decoder(field, 2, seed=0, dims=len(shape))
    latents = (torch.randn_like(group.latents) * 0.3).requires_grad_(True)
    grad = torch.zeros_like(latents)
    gradient = LatentGradient(decoder, group, micro_batch=13)
    total = sum(group.loss(decoder, latents, piece) for piece in group.passes(1))
    total.backward()
    loss = sum(float(gradient.accumulate(latents.detach(), grad, piece)) for piece in group.passes(1))
    torch.testing.assert_close(grad, latents.grad, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(float(total.detach()), rel=1e-5)


@pytest.mark.parametrize("shape", [(45,), (5, 6, 4)])
def test_decoding_a_cloud_repeats_its_fit_also_per_image(shape):
    field = FieldConfig(latent_dim=6, latents_per_pixel=0.2, offset_scale="per_image")
    group = FieldGroup([torch.rand(1, *shape), torch.rand(1, *shape)], field, "train", [0, 1], 0, 0.5, 1000)
    decoder = new_decoder(field, 1, seed=0, dims=len(shape))
    latents = torch.randn_like(group.latents)
    fitted = torch.cat([group.predict(decoder, latents, piece) for piece in group.all_passes()])
    queries = sample_grid(shape)[group.pixel]  # the table's points, in its order
    order = torch.argsort(group.image, stable=True)
    counts = torch.bincount(group.image, minlength=2)
    decoded = decode_queries(decoder, group.clouds(latents), queries[order], counts.cumsum(0), 1.0, field.neighbours)
    torch.testing.assert_close(decoded, fitted[order], rtol=1e-5, atol=1e-5)


def _signal(i: int, length: int = 160) -> torch.Tensor:
    g = torch.Generator().manual_seed(i)
    t = torch.arange(length).float()
    freq, phase = torch.rand(2, 3, generator=g) * 0.12 + 0.02, torch.rand(2, 3, generator=g) * 6.28
    return torch.sin(t * freq[..., None] + phase[..., None]).mean(1) * 0.4 + 0.5  # [2, L], smooth, in [0, 1]


def _volume(i: int, size: int = 9) -> torch.Tensor:
    axis = torch.arange(size).float()
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))
    centre = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(i)) * (size - 1)
    return torch.exp(-(grid - centre).square().sum(0) / (2 * (size / 4) ** 2))[None]  # [1, S, S, S] Gaussian blob


def _constant_psnr(sample: torch.Tensor) -> float:
    return float(-10 * torch.log10((sample - sample.mean((tuple(range(1, sample.ndim))), keepdim=True)).square().mean()))


@pytest.mark.parametrize("make,floor", [(_signal, 22.0), (_volume, 25.0)])
def test_fitting_reaches_a_sensible_psnr_and_renders_back(make, floor):
    field = FieldConfig(latent_dim=8, latents_per_pixel=0.1)
    train, test = [make(i) for i in range(3)], [make(100 + i) for i in range(2)]
    decoder, _ = pretrain_decoder(train, field, PretrainConfig(images=3, steps=120), "train", range(3))
    dims = train[0].ndim - 1
    assert decoder.dims == dims
    result = fit_clouds(test, decoder, field, FitConfig(steps=120), "test", [0, 1])
    clouds = result.clouds.validate()
    assert clouds.dims == dims and clouds.size.tolist() == [list(s.shape[1:]) for s in test]
    for b, sample in enumerate(test):
        assert float(result.psnr[b]) > max(floor, _constant_psnr(sample) + 8)
        image = render(decoder, clouds.cloud(b), field.spacing_for(dims), field.neighbours)[0]
        assert image.shape == sample.shape
        mse = float((image - sample).square().mean())
        assert -10 * math.log10(mse) == pytest.approx(float(result.psnr[b]), abs=0.01)
    assert render(decoder, clouds.cloud(0), field.spacing_for(dims), field.neighbours, scale=2)[0].shape[1:] == \
        tuple(2 * v for v in test[0].shape[1:])
    queries = sample_grid(test[0].shape[1:])  # the grid points: what render queries at scale 1
    decoded = decode_queries(decoder, clouds.cloud(0), queries, torch.tensor([queries.shape[0]]), field.spacing_for(dims), 4)
    back = from_fit_space(decoded.t(), clouds.colour_mean[0], clouds.colour_std[0]).clamp(0, 1)
    torch.testing.assert_close(back, render(decoder, clouds.cloud(0), field.spacing_for(dims), 4)[0].reshape(decoder.channels, -1))


def test_mixed_or_mismatched_dimensions_are_one_clear_error():
    decoder = new_decoder(FIELD, 1, seed=0, dims=1)
    with pytest.raises(FieldInputError, match="decoder of 1-D samples"):
        fit_clouds([torch.rand(1, 6, 6)], decoder, FIELD, FitConfig(steps=1), "train", [0])
    with pytest.raises(FieldInputError, match="same number of spatial dimensions"):
        FieldGroup([torch.rand(1, 30), torch.rand(1, 5, 6)], FIELD, "train", [0, 1], 0, 0.5, 100)
    two = fit_clouds([torch.rand(1, 6, 6)], new_decoder(FIELD, 1, seed=0), FIELD, FitConfig(steps=1), "train", [0]).clouds
    with pytest.raises(FieldInputError, match="1-D decoder"):
        render(decoder, two, FIELD.spacing_for(1), 4)
    with pytest.raises(CloudError, match="size must be"):
        CloudBatch(**{**vars(two), "size": torch.zeros(1, 3, dtype=torch.long)}).validate()


# -- decoder checkpoints and stores ----------------------------------------------------------------------


def test_decoder_checkpoint_records_d(tmp_path):
    decoder = new_decoder(FIELD, 2, seed=4, dims=3)
    assert decoder.hidden.in_features == 4 * (8 + 3)
    save_decoder(tmp_path / "d.safetensors", decoder)
    loaded, meta = load_decoder(tmp_path / "d.safetensors")
    assert loaded.dims == meta.dims == 3 and decoder_hash(loaded) == decoder_hash(decoder)
    same_weights = Decoder(8, 4, 2, dims=3)
    same_weights.load_state_dict(decoder.state_dict())
    assert decoder_hash(same_weights) == decoder_hash(decoder)
    header = DecoderMeta.of(new_decoder(FIELD, 1, seed=4)).to_json()
    del header["dims"]  # written before samples had a D
    assert DecoderMeta.from_json(header).dims == 2
    with pytest.raises(ValueError, match="dims"):
        Decoder(8, 4, 1, dims=4)


def _manifest(dims: int | None) -> dict:
    fields = {"source": "src", "field": {"latent_dim": 3}, "fit": {}, "spacing": 2.0, "decoder_hash": "h", "shard_size": 4}
    return fields if dims is None else {**fields, "dims": dims}


def _clouds(dims: int, count: int = 2) -> CloudBatch:
    return CloudBatch(pos=torch.rand(3 * count, dims), lat=torch.rand(3 * count, 3), offset=torch.arange(1, count + 1) * 3,
                      label=torch.zeros(count, dtype=torch.long), size=torch.full((count, dims), 5), index=torch.arange(count),
                      colour_mean=torch.zeros(count, 1), colour_std=torch.ones(count, 1))


def test_store_manifest_records_d_and_old_stores_read_as_images(tmp_path):
    line = CloudStore.create_or_open(tmp_path / "line", _manifest(1))
    assert line.dims == 1 and json_of(tmp_path / "line")["dims"] == 1
    line.write_shard("train", 0, _clouds(1), torch.zeros(2))
    clouds, _ = line.read_shard("train", 0)
    assert clouds.pos.shape == (6, 1) and clouds.size.shape == (2, 1)
    with pytest.raises(StoreError, match="2-D samples .* 1-D ones"):
        line.write_shard("train", 1, _clouds(2), torch.zeros(2))
    line.record({"train": 2}, {})
    dataset = CloudDataset(line, "train")
    assert dataset[1].pos.shape == (3, 1) and dataset.__getitems__([1, 0])[0].validate().size.tolist() == [[5], [5]]
    old = CloudStore.create_or_open(tmp_path / "old", _manifest(None))  # written before manifests had dims
    assert old.dims == 2 and "dims" not in json_of(tmp_path / "old")
    assert CloudStore.create_or_open(tmp_path / "old", _manifest(2)).key == old.key  # the same store, resumable
    with pytest.raises(StoreError, match="differing: dims"):
        CloudStore.create_or_open(tmp_path / "old", _manifest(3))
    assert line.key != CloudStore.create_or_open(tmp_path / "plane", _manifest(2)).key == old.key
    with pytest.raises(StoreError, match="dims must be"):
        CloudStore.create_or_open(tmp_path / "bad", _manifest(4))


def json_of(store_dir) -> dict:
    return json.loads((store_dir / MANIFEST).read_text())


# -- PTv3 input ------------------------------------------------------------------------------------------


def test_a_line_is_serialized_in_coordinate_order():
    from ptv3.serialization import ORDERS, encode

    t = torch.randperm(300)
    grid = torch.stack([t, torch.zeros_like(t), torch.zeros_like(t)], 1)
    batch = torch.zeros(300, dtype=torch.long)
    for order in ORDERS:
        assert torch.equal(t[torch.argsort(encode(grid, batch, order))], torch.arange(300)), order


def test_the_classifier_takes_clouds_of_every_d():
    from arc.model import ARCModel

    torch.manual_seed(0)
    small = dict(enc_depths=[1, 1], enc_channels=[8, 8], enc_num_head=[2, 2], enc_patch_size=[5, 5], stride=[2],
                 grid_size=1.0, drop_path=0.0)
    model = ARCModel(3, latent_dim=6, backbone={"class_path": "ptv3.PointTransformerV3", "init_args": small}).eval()
    for dims in (1, 2, 3):
        pos = torch.randint(0, 12, (30, dims)).float()
        logits = model.classify(pos, torch.randn(30, 6), torch.tensor([12, 30]))
        assert logits.shape == (2, 3) and bool(torch.isfinite(logits).all())
    with pytest.raises(CloudError, match="D in 1..3"):
        model.classify(torch.zeros(30, 4), torch.randn(30, 6), torch.tensor([12, 30]))


# -- the stages on 1-D and 3-D sources -------------------------------------------------------------------


@pytest.mark.parametrize("spec,options", [("waves", {"length": 48}), ("solids", {"size": 7})])
def test_the_stages_fill_a_store_of_d_dimensional_clouds(tmp_path, spec, options):
    from arc.data.sources import open_source
    from arc.field import DecoderFileError
    from arc.pipeline import anchor_stage, default_decoder_path, open_store, pretrain_stage

    source = open_source(spec, count={"train": 5, "val": 2, "test": 2}, **options)
    field, fit = FieldConfig(latent_dim=4, latents_per_pixel=0.1), FitConfig(steps=5)
    pretrain = PretrainConfig(images=3, steps=5)
    path = default_decoder_path(source, field, pretrain, tmp_path)
    settings = (source.identity, dataclasses.asdict(field), dataclasses.asdict(pretrain))
    assert path.stem.endswith(decoder_key(*settings, source.dims)) and not path.stem.endswith(decoder_key(*settings))
    decoder = pretrain_stage(source, field, pretrain, path)
    store = anchor_stage(source, field, fit, open_store(source, field, fit, decoder, tmp_path / "stores", shard_size=4))
    dims = source.dims
    assert store.is_complete and store.dims == dims == json_of(store.path)["dims"]
    assert store.spacing == pytest.approx(field.spacing_for(dims))
    clouds = CloudDataset(store, "test").__getitems__([0, 1])[0].validate()
    assert clouds.dims == dims and clouds.size.shape == (2, dims)
    images = open_source("shapes", size=8, count={"train": 3, "val": 1, "test": 1})
    with pytest.raises(DecoderFileError, match=f"decodes {dims}-D samples; the source shapes has 2-D"):
        open_store(images, field, fit, decoder, tmp_path / "other")

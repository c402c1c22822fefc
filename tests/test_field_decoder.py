"""Decoder layout, checkpoint hashing, decode at queries and rendering."""
import json

import pytest
import torch

from arc.field import (
    Decoder,
    DecoderFileError,
    DecoderMeta,
    FieldConfig,
    FieldGroup,
    decode_queries,
    decoder_hash,
    load_decoder,
    new_decoder,
    pixel_grid,
    render,
    save_decoder,
)


def test_decoder_shape_and_layers():
    dec = Decoder(latent_dim=32, neighbours=4, channels=3)
    assert dec.in_features == 136
    assert dec.hidden.weight.shape == (136, 136) and dec.out.weight.shape == (3, 136)
    assert sum(p.numel() for p in dec.parameters()) == 19043  # 136*136 + 136 + 3*136 + 3: the paper decoder for RGB
    assert dec(torch.zeros(5, 136)).shape == (5, 3)
    assert sum(p.numel() for p in Decoder(32, 4, 1).parameters()) == 18769


def test_hash_stable_across_save_load(tmp_path):
    dec = new_decoder(FieldConfig(), 1, seed=3)
    digest = save_decoder(tmp_path / "d.safetensors", dec, DecoderMeta.of(dec, source="npz:x", extra={"settings": [1, 2]}))
    assert digest == decoder_hash(dec)
    loaded, meta = load_decoder(tmp_path / "d.safetensors")
    assert decoder_hash(loaded) == digest == meta.hash
    assert meta.source == "npz:x" and meta.extra == {"settings": [1, 2]} and meta.channels == 1 and meta.images is None
    for a, b in zip(dec.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert decoder_hash(new_decoder(FieldConfig(), 1, seed=3)) == digest
    assert decoder_hash(new_decoder(FieldConfig(), 1, seed=4)) != digest
    assert not list(tmp_path.glob("*.tmp*"))


def test_corrupt_and_foreign_files(tmp_path):
    path = tmp_path / "d.safetensors"
    save_decoder(path, Decoder(8, 2, 1))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DecoderFileError, match="corrupt"):
        load_decoder(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DecoderFileError, match="not a readable"):
        load_decoder(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "other"})
    with pytest.raises(DecoderFileError, match="not an arc decoder"):
        load_decoder(tmp_path / "foreign.safetensors")
    with pytest.raises(DecoderFileError, match="does not exist"):
        load_decoder(tmp_path / "missing.safetensors")
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(bytes(raw[8 : 8 + header_len]))
    assert header["__metadata__"]["format"] == "arc-decoder/1"


def _group(channels=1, sizes=((12, 12), (9, 11))):
    field = FieldConfig(latent_dim=8, neighbours=4, latents_per_pixel=0.1)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(channels, h, w, generator=g) for h, w in sizes]
    group = FieldGroup(images, field, "train", [5, 6], seed=0, pixel_fraction=0.25, pixel_budget=10**6)
    with torch.no_grad():
        group.latents.normal_(generator=g)  # non-trivial latents
    dec = new_decoder(field, channels, seed=0)
    return field, group, dec, images


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_at_pixel_centres_equals_fitting_forward(channels):
    field, group, dec, images = _group(channels)
    clouds = group.clouds()
    queries = torch.cat([pixel_grid(int(h), int(w)) for h, w in clouds.size.tolist()])
    counts = clouds.size[:, 0] * clouds.size[:, 1]
    out = decode_queries(dec, clouds, queries, torch.cumsum(counts, 0), field.spacing, field.neighbours, chunk=37)
    expected = torch.zeros_like(out)
    starts = (torch.cumsum(counts, 0) - counts)[group.image]
    for piece in group.all_passes():
        sl = slice(piece.start, piece.stop)
        expected[(starts[sl] + group.pixel[sl])] = group.predict(dec, group.latents, piece)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    images01 = render(dec, clouds, field.spacing, field.neighbours)
    for b, image in enumerate(images01):
        h, w = clouds.size[b].tolist()
        flat = out[int(torch.cumsum(counts, 0)[b] - counts[b]) : int(torch.cumsum(counts, 0)[b])]
        manual = (flat * clouds.colour_std[b] + clouds.colour_mean[b]).clamp(0, 1).t().reshape(channels, h, w)
        torch.testing.assert_close(image, manual, atol=1e-5, rtol=1e-5)


def test_render_scale_and_canvas():
    field, group, dec, _ = _group(3)
    clouds = group.clouds()
    big = render(dec, clouds, field.spacing, field.neighbours, scale=2, chunk=50)
    assert [tuple(im.shape) for im in big] == [(3, 24, 24), (3, 18, 22)]
    assert all(float(im.min()) >= 0 and float(im.max()) <= 1 for im in big)
    canvas = render(dec, clouds, field.spacing, field.neighbours, canvas=(20, 30))
    assert [tuple(im.shape) for im in canvas] == [(3, 20, 30)] * 2
    # the sub-pixel query at scale 2 for output pixel (1, 1) sits at (0.25, 0.25)
    q = torch.tensor([[0.25, 0.25]])
    one = clouds.cloud(0)
    val = decode_queries(dec, one, q, torch.tensor([1]), field.spacing, field.neighbours)
    torch.testing.assert_close(big[0][:, 1, 1], (val[0] * one.colour_std[0] + one.colour_mean[0]).clamp(0, 1))


def test_the_record_round_trips_and_reads_files_written_before_it(tmp_path):
    dec = new_decoder(FieldConfig(), 1, seed=3)
    meta = DecoderMeta.of(dec, source="digits", source_hash="ab12", images=3, psnr_mean=21.123449)
    header = meta.to_json()
    assert json.loads(header["meta"]) == {"images": 3, "psnr_mean": "21.1234", "source": "digits", "source_hash": "ab12"}
    assert DecoderMeta.from_json(header) == DecoderMeta.of(dec, source="digits", source_hash="ab12", images=3, psnr_mean=21.1234)
    with pytest.raises(ValueError, match="does not describe"):
        save_decoder(tmp_path / "x.safetensors", new_decoder(FieldConfig(), 1, seed=4), meta)
    # the header the pretraining LightningModule wrote before the record (numbers as strings, a "pretrain" string)
    from safetensors.torch import save_file

    old = {**header, "meta": json.dumps({"source": "digits", "images": "3", "psnr_mean": "20.5000", "pretrain": "{'steps': 5}"})}
    save_file({k: v.contiguous() for k, v in dec.state_dict().items()}, str(tmp_path / "old.safetensors"), metadata=old)
    _, read = load_decoder(tmp_path / "old.safetensors")
    assert (read.source, read.images, read.psnr_mean, read.source_hash) == ("digits", 3, 20.5, None)
    assert read.extra == {"pretrain": "{'steps': 5}"} and read.hash == decoder_hash(dec)

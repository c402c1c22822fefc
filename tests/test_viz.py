"""Visualisation (arc.viz): frames and sub-pixel queries, rendering, grids, panels, logger media."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from arc.cloud import CloudBatch
from arc.field.decode import render
from arc.field.decoder import Decoder
from arc.viz import (
    Frame,
    FrameError,
    cloud_scatter,
    confusion_image,
    image_grid,
    log_reconstructions,
    psnr,
    reconstruction_panel,
    render_view,
    save_png,
)

Z, N, S = 5, 4, 3.0


def _decoder(channels: int = 1) -> Decoder:
    torch.manual_seed(0)
    return Decoder(Z, N, channels).eval()


def _clouds(sizes=((16, 16), (12, 20)), channels: int = 1) -> CloudBatch:
    generator = torch.Generator().manual_seed(1)
    parts = []
    for h, w in sizes:
        pos = torch.cartesian_prod(torch.arange(0, h, 3), torch.arange(1, w, 3)).float()
        parts.append(pos)
    pos = torch.cat(parts)
    return CloudBatch(
        pos=pos,
        lat=torch.randn(pos.shape[0], Z, generator=generator),
        offset=torch.cumsum(torch.tensor([p.shape[0] for p in parts]), 0),
        label=torch.zeros(len(sizes), dtype=torch.long),
        size=torch.tensor([list(s) for s in sizes]),
        index=torch.arange(len(sizes)),
        colour_mean=torch.full((len(sizes), channels), 0.5),
        colour_std=torch.full((len(sizes), channels), 0.25),
    )


def test_frame_parse():
    assert Frame.parse(None, (10, 12)) == Frame(10, 12, 0, 0)
    assert Frame.parse("pad=5", (10, 12)) == Frame(20, 22, 5, 5)
    assert Frame.parse("15,20", (10, 12)) == Frame(15, 20, 2, 4)
    for bad, message in [("pad=x", "'H,W' or 'pad=P'"), ("12", "'H,W' or 'pad=P'"), ("pad=-1", "pad must be >= 0"),
                         ("8,30", "smaller than the 10x12 image")]:
        with pytest.raises(FrameError, match=message):
            Frame.parse(bad, (10, 12))


def test_frame_queries_place_and_display_agree():
    frame = Frame(6, 8, 2, 3)
    q = frame.queries(scale=2).reshape(12, 16, 2)
    assert torch.allclose(q[0, 0], torch.tensor([-0.25 - 2, -0.25 - 3]))
    assert torch.allclose(q[5, 7], torch.tensor([2.25 - 2, 3.25 - 3]))
    # the output pixel that displays content point p is where the queries are nearest to p
    content = torch.tensor([[0.0, 0.0], [1.25, 2.75]])
    shown = frame.to_display(content, scale=2)
    for p, d in zip(content, shown):
        assert torch.allclose(q[int(round(float(d[0]))), int(round(float(d[1])))], p, atol=0.25 + 1e-6)
    image = torch.rand(1, 2, 3)
    placed = frame.place(image, scale=2)
    assert placed.shape == (1, 12, 16)
    assert torch.equal(placed[0, 4:8, 6:12], image[0].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert placed.sum() == pytest.approx(4 * image.sum().item(), rel=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_render_view_matches_the_field_renderer(scale):
    decoder, clouds = _decoder(channels=3), _clouds(channels=3)
    expected = render(decoder, clouds, S, N, scale=scale)
    for b in range(len(clouds)):
        got = render_view(decoder, clouds.cloud(b), S, N, scale=scale)
        assert torch.allclose(got, expected[b], atol=1e-6)


def test_render_view_on_a_padded_frame_contains_the_plain_render():
    decoder, clouds = _decoder(), _clouds()
    cloud = clouds.cloud(1)
    plain = render_view(decoder, cloud, S, N, scale=2)
    padded = render_view(decoder, cloud, S, N, scale=2, frame=Frame.parse("pad=4", (12, 20)))
    assert padded.shape == (1, 40, 56)
    assert torch.allclose(padded[:, 8:32, 8:48], plain, atol=1e-6)
    with pytest.raises(FrameError, match="scale must be a positive integer"):
        render_view(decoder, cloud, S, N, scale=0)


def test_psnr():
    a = torch.full((1, 4, 4), 0.5)
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, torch.zeros(1, 4, 5))


def test_image_grid_and_points():
    images = [torch.rand(1, 10, 10), torch.rand(1, 10, 10).expand(3, 10, 10), torch.zeros(1, 10, 10)]  # no red pixels
    one_row = image_grid(images, ["a", "b", "c"])
    assert one_row.dtype == np.uint8 and one_row.ndim == 3 and one_row.shape[2] == 3
    two_rows = image_grid(images, ["a", "b", "c"], columns=2)
    assert two_rows.shape[0] > one_row.shape[0] and two_rows.shape[1] < one_row.shape[1]
    dotted = image_grid(images, ["a", "b", "c"], points=[None, None, torch.tensor([[5.0, 5.0], [2.0, 7.0]])])
    assert dotted.shape == one_row.shape
    red = (dotted[..., 0] > 200) & (dotted[..., 1] < 60) & (dotted[..., 2] < 60)
    assert red.sum() > 0 and ((one_row[..., 0] > 200) & (one_row[..., 1] < 60)).sum() == 0
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([])


def test_save_png_round_trip(tmp_path):
    grey = torch.rand(1, 7, 9)
    back = np.asarray(Image.open(save_png(tmp_path / "g.png", grey)))
    assert back.shape == (7, 9) and np.abs(back / 255.0 - grey[0].numpy()).max() <= 0.5 / 255 + 1e-6
    rgb = torch.rand(3, 5, 4)
    back = np.asarray(Image.open(save_png(tmp_path / "sub" / "c.png", rgb)))
    assert back.shape == (5, 4, 3) and np.abs(back / 255.0 - rgb.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_reconstruction_panel():
    decoder, clouds = _decoder(), _clouds()
    bare = reconstruction_panel(decoder, clouds, S, N)
    originals = render(decoder, clouds, S, N)
    with_originals = reconstruction_panel(decoder, clouds, S, N, originals=originals, scale=2)
    assert bare.dtype == np.uint8 and bare.shape[2] == 3
    assert with_originals.shape[0] > bare.shape[0]  # a second row of originals
    with pytest.raises(ValueError, match="1 originals for 2 clouds"):
        reconstruction_panel(decoder, clouds, S, N, originals=originals[:1])


def test_log_reconstructions_goes_to_wandb_loggers_only(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    class Recorder(WandbLogger):
        def __init__(self):
            super().__init__(offline=True, save_dir=str(tmp_path))
            self.calls = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append((key, images, step))

    recorder, csv = Recorder(), CSVLogger(str(tmp_path / "csv"))
    decoder, clouds = _decoder(), _clouds()
    panel = log_reconstructions([csv, recorder], decoder, clouds, S, N, key="pretrain/reconstruction", step=7)
    assert len(recorder.calls) == 1
    key, images, step = recorder.calls[0]
    assert key == "pretrain/reconstruction" and step == 7 and len(images) == 1
    assert np.array_equal(images[0], panel) and panel.dtype == np.uint8
    assert log_reconstructions([csv], decoder, clouds, S, N, key="k", step=0) is None
    assert log_reconstructions(None, decoder, clouds, S, N, key="k", step=0) is None
    assert not (tmp_path / "csv").exists() or not any((tmp_path / "csv").rglob("*.png"))


def test_cloud_scatter():
    clouds = _clouds()
    image = cloud_scatter(clouds)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert cloud_scatter(clouds, titles=["a", "b"], colour="norm").shape == image.shape
    assert cloud_scatter(clouds, colour=2).shape == image.shape
    assert cloud_scatter(clouds.cloud(0)).shape[1] < image.shape[1]
    with pytest.raises(ValueError, match="colour must be"):
        cloud_scatter(clouds, colour=Z)
    with pytest.raises(ValueError, match="1 titles for 2 clouds"):
        cloud_scatter(clouds, titles=["a"])


def test_confusion_image():
    image = confusion_image(torch.tensor([[3, 1], [0, 4]]), ["cat", "dog"])
    assert image.dtype == np.uint8 and image.shape[2] == 3
    with pytest.raises(ValueError, match="for 3 class names"):
        confusion_image(torch.eye(2), ["a", "b", "c"])

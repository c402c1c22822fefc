"""Plots of 1-D and 3-D clouds (arc.viz_signals): line plots, slice grids, the reconstruction panel's dispatch on D."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from arc.cloud import CloudBatch
from arc.field.decode import render
from arc.field.decoder import Decoder
from arc.geometry import Affine
from arc.viz import Frame, FrameError, cloud_scatter, reconstruction_panel, render_view, save_png
from arc.viz_signals import line_grid, slice_grid, slice_indices

Z, N, S = 5, 4, 3.0


def _clouds(sizes, channels: int) -> CloudBatch:
    """Clouds on a regular grid (every third point) of the D-dimensional ``sizes``, random latents."""
    generator = torch.Generator().manual_seed(1)
    parts = [torch.cartesian_prod(*[torch.arange(0, n, 3) for n in size]).float().reshape(-1, len(size)) for size in sizes]
    pos = torch.cat(parts)
    return CloudBatch(pos=pos, lat=torch.randn(pos.shape[0], Z, generator=generator),
                      offset=torch.cumsum(torch.tensor([p.shape[0] for p in parts]), 0),
                      label=torch.zeros(len(sizes), dtype=torch.long), size=torch.tensor([list(s) for s in sizes]),
                      index=torch.arange(len(sizes)), colour_mean=torch.full((len(sizes), channels), 0.5),
                      colour_std=torch.full((len(sizes), channels), 0.25))


def _decoder(channels: int, dims: int) -> Decoder:
    torch.manual_seed(0)
    return Decoder(Z, N, channels, dims=dims).eval()


@pytest.mark.parametrize("dims,sizes,channels", [(1, ((40,), (30,)), 2), (3, ((8, 10, 12), (6, 10, 12)), 1)])
def test_reconstruction_panels_of_1d_and_3d_clouds_are_written(dims, sizes, channels, tmp_path):
    decoder, clouds = _decoder(channels, dims), _clouds(sizes, channels)
    originals = render(decoder, clouds, S, N)
    bare = reconstruction_panel(decoder, clouds, S, N)
    panel = reconstruction_panel(decoder, clouds, S, N, originals=originals, scale=2)
    assert bare.dtype == np.uint8 and bare.ndim == 3 and bare.shape[2] == 3
    assert min(bare.shape[:2]) > 100 and panel.shape[0] >= bare.shape[0]
    assert 500 < save_png(tmp_path / "panel.png", panel).stat().st_size < 5_000_000
    with pytest.raises(ValueError, match="1 originals for 2 clouds"):
        reconstruction_panel(decoder, clouds, S, N, originals=originals[:1])


def test_line_grid_marks_latents_and_draws_one_axis_per_channel():
    signal = torch.linspace(0, 1, 50).expand(3, 50)
    plain = line_grid([signal], ["a"])
    ticked = line_grid([signal], ["a"], references=[signal.flip(1)], points=[torch.tensor([3.0, 20.0, 41.0])])
    assert plain.shape == ticked.shape and not np.array_equal(plain, ticked)
    red = (ticked[..., 0] > 180) & (ticked[..., 1] < 90) & (ticked[..., 2] < 90)
    assert red.sum() > 0 and ((plain[..., 0] > 180) & (plain[..., 1] < 90) & (plain[..., 2] < 90)).sum() == 0
    assert line_grid([signal[:1]], ["a"]).shape[0] < plain.shape[0]  # one channel: one axis
    with pytest.raises(ValueError, match=r"1-D signals \[C, L\]"):
        line_grid([torch.rand(1, 4, 4)])


def test_slice_grid_shows_evenly_spaced_slices():
    assert slice_indices(10) == [0, 3, 6, 9] and slice_indices(2) == [0, 1] and slice_indices(9, 3) == [0, 4, 8]
    volume = torch.rand(1, 9, 12, 12)
    one, two = slice_grid([volume]), slice_grid([volume, volume], ["o", "d"], points=[None, torch.tensor([[4.2, 5.0, 5.0]])])
    assert one.dtype == np.uint8 and two.shape[0] > one.shape[0]
    with pytest.raises(ValueError, match=r"\[C, D, H, W\]"):
        slice_grid([torch.rand(1, 5, 5)])


@pytest.mark.parametrize("dims,sizes", [(1, ((40,), (30,))), (3, ((8, 10, 12), (6, 10, 12)))])
def test_cloud_scatter_draws_1d_and_3d_clouds(dims, sizes):
    image = cloud_scatter(_clouds(sizes, 1), colour="norm")
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.std() > 1


@pytest.mark.parametrize("dims,sizes", [(1, ((40,),)), (3, ((6, 7, 8),))])
def test_render_view_of_1d_and_3d_clouds_is_the_field_renderer_and_takes_query_maps(dims, sizes):
    decoder, cloud = _decoder(1, dims), _clouds(sizes, 1)
    for scale in (1, 2):
        assert torch.allclose(render_view(decoder, cloud, S, N, scale), render(decoder, cloud, S, N, scale)[0], atol=1e-6)
    centre = [(n - 1) / 2 for n in sizes[0]]
    flipped = render_view(decoder, cloud, S, N, query_map=Affine.flip("h", centre))  # exact flip of the last axis
    assert torch.allclose(flipped, render_view(decoder, cloud, S, N).flip(-1), atol=1e-5)
    with pytest.raises(FrameError, match="canvas frame is for 2-D images"):
        render_view(decoder, cloud, S, N, frame=Frame(4, 4))

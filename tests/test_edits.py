"""Latent-space edits (arc.edits): parsing, conventions, exactness, mixing and masking.

A random decoder and lattice clouds are enough here: every property below is about where
the decoder is queried and which latents it sees, not about how good a fit is.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from arc.cloud import CloudBatch
from arc.edits import EditError, EditState, apply_edit, apply_edits, parse_edit
from arc.field.decoder import Decoder
from arc.geometry import Affine
from arc.viz import Frame, render_view

Z, N, S = 6, 4, 3.0


def _decoder(channels: int = 1, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(Z, N, channels).eval()


def _cloud(size=(24, 24), step: int = 3, start: int = 0, seed: int = 0, index: int = 0) -> CloudBatch:
    """Latents on an integer lattice (like sampled pixel positions), random latent vectors."""
    h, w = size
    rows, cols = torch.arange(start, h, step), torch.arange(start, w, step)
    pos = torch.cartesian_prod(rows, cols).float()
    generator = torch.Generator().manual_seed(seed)
    pos = pos[torch.randperm(pos.shape[0], generator=generator)]  # index order unrelated to geometry
    return CloudBatch(
        pos=pos,
        lat=torch.randn(pos.shape[0], Z, generator=generator),
        offset=torch.tensor([pos.shape[0]]),
        label=torch.tensor([0]),
        size=torch.tensor([list(size)]),
        index=torch.tensor([index]),
        colour_mean=torch.tensor([[0.5]]),
        colour_std=torch.tensor([[0.2]]),
    )


def _render(decoder, state: EditState, frame=None, scale=1):
    return render_view(decoder, state.cloud, S, N, scale, frame, state.query_map)


def _edit(cloud, *specs, exact=False, **kwargs) -> EditState:
    return apply_edits(cloud, [parse_edit(s, exact=exact) for s in specs], N, **kwargs)[-1]


# ---------------------------------------------------------------- parsing


def test_parse_valid_specs():
    e = parse_edit("translate:dx=30,dy=-2.5")
    assert (e.kind, e.params, e.exact) == ("translate", {"dx": 30.0, "dy": -2.5}, False)
    assert parse_edit("translate:dy=4").params == {"dx": 0.0, "dy": 4.0}
    assert parse_edit("rotate:deg=45,row=3,col=4").params == {"deg": 45.0, "row": 3.0, "col": 4.0}
    assert parse_edit("rotate:deg=90,exact").exact and parse_edit("flip:axis=h", exact=True).exact
    assert not parse_edit("flip:axis=v,exact=false", exact=True).exact
    assert parse_edit("mask:box=1,2,10,12").params == {"box": (1.0, 2.0, 10.0, 12.0)}
    assert parse_edit("mask:circle=5,6,3").params == {"circle": (5.0, 6.0, 3.0)}
    assert parse_edit("mask:fraction=0.3,seed=7").params == {"fraction": 0.3, "seed": 7}
    mix = parse_edit("mix:index=40,mode=box,box=0,0,12,12")
    assert mix.params == {"index": 40, "mode": "box", "box": (0.0, 0.0, 12.0, 12.0)}
    assert parse_edit("mix:index=3").params["mode"] == "left-right"
    assert not parse_edit("push:px=2", exact=True).exact  # the global flag only concerns geometric edits
    assert parse_edit("rotate:deg=45,exact").title == "rotate deg=45 (exact)"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("warp:x=1", "unknown edit 'warp'"),
        ("rotate", "missing parameter 'deg'"),
        ("rotate:deg=abc", "deg must be a number"),
        ("rotate:deg=nan", "deg must be finite"),
        ("rotate:deg=10,row=3", "both row and col"),
        ("translate:dx", "malformed parameter 'dx'"),
        ("translate:dx=1,dx=2", "given twice"),
        ("translate:dz=1", "unknown parameter(s) ['dz']"),
        ("flip:axis=x", "axis must be one of h|v"),
        ("scale:factor=0", "factor must be > 0"),
        ("push:px=-1", "px must be >= 0"),
        ("push:px=1,exact", "exact mode applies to"),
        ("mask:box=1,2,3", "box takes 4"),
        ("mask:box=5,0,1,3", "r0 < r1"),
        ("mask:fraction=1.5", "fraction must be in [0, 1)"),
        ("mask:box=0,0,4,4,fraction=0.2", "exactly one of"),
        ("mask:box=0,0,4,4,seed=1", "seed= is only used with fraction"),
        ("mix:index=x", "index must be an integer"),
        ("mix:index=1,mode=box", "mode=box needs box"),
        ("mix:index=1,mode=stack,box=0,0,1,1", "only used with mode=box"),
        ("noise:std=-0.1", "std must be >= 0"),
        ("rotate:deg=3,exact=maybe", "exact must be true or false"),
    ],
)
def test_parse_errors_name_the_problem(spec, message):
    with pytest.raises(EditError) as err:
        parse_edit(spec)
    assert message in str(err.value)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("dx, dy", [(5, 0), (0, -4), (7, 3), (-6, -2)])
def test_whole_pixel_translation_translates_the_reconstruction_exactly(dx, dy):
    decoder, cloud = _decoder(), _cloud()
    pad = 8
    frame = Frame.parse(f"pad={pad}", (24, 24))
    base = _render(decoder, EditState(cloud), frame)
    moved = _render(decoder, _edit(cloud, f"translate:dx={dx},dy={dy}"), frame)
    expected = torch.roll(base, shifts=(dy, dx), dims=(1, 2))
    rows = slice(max(dy, 0), base.shape[1] + min(dy, 0))  # drop what rolled around the canvas edge
    cols = slice(max(dx, 0), base.shape[2] + min(dx, 0))
    assert torch.allclose(moved[:, rows, cols], expected[:, rows, cols], atol=1e-6)
    assert not torch.allclose(moved, base, atol=1e-3)


@pytest.mark.parametrize(
    "spec, transform",
    [
        ("rotate:deg=90", lambda r: torch.rot90(r, 1, (1, 2))),
        ("rotate:deg=-90", lambda r: torch.rot90(r, -1, (1, 2))),
        ("rotate:deg=270", lambda r: torch.rot90(r, 3, (1, 2))),
        ("rotate:deg=180", lambda r: torch.rot90(r, 2, (1, 2))),
        ("flip:axis=h", lambda r: r.flip(2)),
        ("flip:axis=v", lambda r: r.flip(1)),
    ],
)
def test_exact_mode_equals_rot90_and_flip_of_the_reconstruction(spec, transform):
    decoder, cloud = _decoder(channels=3), _cloud(size=(20, 20), step=3, start=1)
    cloud = replace(cloud, colour_mean=torch.tensor([[0.5, 0.4, 0.6]]), colour_std=torch.tensor([[0.2, 0.3, 0.1]]))
    for scale in (1, 2):
        recon = _render(decoder, EditState(cloud), scale=scale)
        exact = _render(decoder, _edit(cloud, spec, exact=True), scale=scale)
        assert torch.allclose(exact, transform(recon), atol=1e-6), scale
    approximate = _render(decoder, _edit(cloud, spec))
    assert not torch.allclose(approximate, transform(_render(decoder, EditState(cloud))), atol=1e-3)


def test_exact_flips_and_half_turn_on_a_non_square_image():
    decoder, cloud = _decoder(), _cloud(size=(14, 22), step=3, start=1)
    recon = _render(decoder, EditState(cloud))
    assert torch.allclose(_render(decoder, _edit(cloud, "rotate:deg=180", exact=True)), recon.flip(1, 2), atol=1e-6)
    assert torch.allclose(_render(decoder, _edit(cloud, "flip:axis=h,exact", "flip:axis=v,exact")), recon.flip(1, 2), atol=1e-6)


def test_exact_rotation_composes_for_any_angle():
    """Four exact quarter turns are the identity; +30 then -30 degrees gives the reconstruction back
    (the query map is the identity up to float64 rounding, which can only reorder exact distance ties)."""
    decoder, cloud = _decoder(), _cloud()
    recon = _render(decoder, EditState(cloud))
    assert torch.equal(_render(decoder, _edit(cloud, *["rotate:deg=90"] * 4, exact=True)), recon)
    back = _render(decoder, _edit(cloud, "rotate:deg=30", "rotate:deg=-30", exact=True))
    same = (back - recon).abs().amax(0) < 1e-5
    assert same.float().mean() > 0.98
    turned = _render(decoder, _edit(cloud, "rotate:deg=30", exact=True))
    assert (turned - recon).abs().amax() > 1e-2


def test_exact_scale_samples_the_reconstruction_on_a_finer_grid():
    decoder, cloud = _decoder(), _cloud()
    recon = _render(decoder, EditState(cloud))
    zoomed = _render(decoder, _edit(cloud, "scale:factor=2,row=0,col=0", exact=True))
    assert torch.allclose(zoomed[:, ::2, ::2], recon[:, :12, :12], atol=1e-6)


def test_point_edits_after_an_exact_turn_act_in_the_displayed_frame():
    decoder, cloud = _decoder(), _cloud()
    frame = Frame.parse("pad=6", (24, 24))
    turned = _render(decoder, _edit(cloud, "rotate:deg=90", exact=True), frame)
    state = _edit(cloud, "rotate:deg=90,exact", "translate:dx=3,dy=-2")
    moved = _render(decoder, state, frame)
    assert torch.allclose(moved[:, :-2, 3:], torch.roll(turned, (-2, 3), (1, 2))[:, :-2, 3:], atol=1e-6)
    assert torch.allclose(state.displayed_positions(), Affine.rotation(90, (11.5, 11.5))(cloud.pos) + torch.tensor([-2.0, 3.0]), atol=1e-5)


# ---------------------------------------------------------------- point edits


def test_mix_left_right_takes_each_half_from_its_cloud():
    """Lattices of spacing 3: a pixel's 4 nearest latents lie within 3·√2 ≈ 4.3 px of it, so
    columns <= 6 only see cloud A's left latents (B's nearest kept latent is >= 6 columns away)
    and columns >= 18 only B's right latents; there the mix equals each cloud alone."""
    decoder = _decoder()
    a, b = _cloud(seed=1), _cloud(start=1, seed=2, index=7)
    mixed = _edit(a, "mix:index=7,mode=left-right", lookup=lambda i, split: b)
    assert bool((mixed.cloud.pos[:, 1] < 11.5).sum() == (a.pos[:, 1] < 11.5).sum())
    assert mixed.cloud.num_points == int((a.pos[:, 1] < 11.5).sum() + (b.pos[:, 1] >= 11.5).sum())
    out = _render(decoder, mixed)
    alone_a = _render(decoder, EditState(a))
    alone_b = _render(decoder, EditState(b))
    assert torch.allclose(out[:, :, :7], alone_a[:, :, :7], atol=1e-6)
    assert torch.allclose(out[:, :, 18:], alone_b[:, :, 18:], atol=1e-6)
    assert not torch.allclose(alone_a[:, :, 18:], alone_b[:, :, 18:], atol=1e-3)


def test_mix_stack_and_box():
    a, b = _cloud(seed=1), _cloud(start=1, seed=2, index=7)
    calls = []

    def lookup(index, split):
        calls.append((index, split))
        return b

    stacked = _edit(a, "mix:index=7,mode=stack,split=train", lookup=lookup)
    assert stacked.cloud.num_points == a.num_points + b.num_points and calls == [(7, "train")]
    boxed = _edit(a, "mix:index=7,mode=box,box=0,0,12,12", lookup=lookup).cloud
    inside = lambda p: (p[:, 0] < 12) & (p[:, 1] < 12)  # noqa: E731
    assert boxed.num_points == int((~inside(a.pos)).sum() + inside(b.pos).sum())
    from_b = {tuple(v) for v in b.lat[inside(b.pos)].tolist()}
    assert {tuple(v) for v in boxed.lat[inside(boxed.pos)].tolist()} == from_b
    with pytest.raises(EditError, match="no other clouds"):
        _edit(a, "mix:index=7")


def test_masks_remove_the_named_points():
    cloud = _cloud()
    box = _edit(cloud, "mask:box=0,0,9,12").cloud
    assert box.num_points == cloud.num_points - 3 * 4  # rows 0,3,6 x cols 0,3,6,9
    assert not bool(((box.pos[:, 0] < 9) & (box.pos[:, 1] < 12)).any())
    circle = _edit(cloud, "mask:circle=12,12,3").cloud
    assert circle.num_points == cloud.num_points - 5  # (12,12) and its 4 lattice neighbours at distance 3
    fraction = _edit(cloud, "mask:fraction=0.25,seed=3").cloud
    assert fraction.num_points == int(0.75 * cloud.num_points)
    assert torch.equal(fraction.pos, _edit(cloud, "mask:fraction=0.25,seed=3").cloud.pos)
    assert not torch.equal(fraction.pos, _edit(cloud, "mask:fraction=0.25,seed=4").cloud.pos)
    with pytest.raises(EditError, match="leaves 0 points; the decoder needs at least 4"):
        _edit(cloud, "mask:box=-1,-1,30,30")


def test_push_and_noise_are_seeded():
    cloud = _cloud()
    pushed = _edit(cloud, "push:px=2,seed=5").cloud
    assert torch.equal(pushed.pos, _edit(cloud, "push:px=2,seed=5").cloud.pos)
    assert not torch.equal(pushed.pos, _edit(cloud, "push:px=2,seed=6").cloud.pos)
    assert (pushed.pos - cloud.pos).abs().max() <= 2 and (pushed.pos - cloud.pos).abs().max() > 0.5
    assert torch.equal(_edit(cloud, "push:px=0").cloud.pos, cloud.pos)
    std = torch.linspace(0.1, 2.0, Z)
    noisy = _edit(cloud, "noise:std=0.5,seed=1", latent_std=std).cloud
    spread = (noisy.lat - cloud.lat).std(0) / (0.5 * std)
    assert torch.allclose(spread, torch.ones(Z), atol=0.3)
    assert torch.equal(noisy.pos, cloud.pos)
    with pytest.raises(EditError, match="latent_std has 3 entries"):
        _edit(cloud, "noise:std=0.5", latent_std=torch.ones(3))


def test_edits_are_cumulative_and_leave_the_input_alone():
    cloud = _cloud()
    before = cloud.pos.clone()
    states = apply_edits(cloud, [parse_edit("translate:dx=1"), parse_edit("translate:dy=2")], N)
    assert torch.equal(states[0].cloud.pos, before + torch.tensor([0.0, 1.0]))
    assert torch.equal(states[1].cloud.pos, before + torch.tensor([2.0, 1.0]))
    assert torch.equal(cloud.pos, before)
    two = CloudBatch.concat([cloud, cloud])
    with pytest.raises(EditError, match="one cloud at a time"):
        apply_edit(EditState(two), parse_edit("translate:dx=1"), N)

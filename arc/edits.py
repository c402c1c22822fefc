"""Latent-space edits of one stored cloud: move, rotate, flip, scale, push, mask, mix and noise.

An edit is written ``name:key=value,...`` (see :func:`parse_edit`) and applied to an
:class:`EditState`, cumulatively. Conventions (:mod:`arc.geometry`): positions are
(row, col) pixels, origin top-left; the image centre is ((H-1)/2, (W-1)/2); ``dx`` = +col,
``dy`` = +row; a positive angle turns counter-clockwise as the image is displayed.

Edits and what they do (parameters in pixels of the image frame; the table is the 2-D spelling):

=================================================  ==============================================
``translate:dx=..,dy=..``                           move every latent by (dy, dx)
``rotate:deg=..[,row=..,col=..]``                   turn about the image centre or a given point
``flip:axis=h|v``                                   mirror columns (h, left-right) or rows (v)
``scale:factor=..[,row=..,col=..]``                 scale positions about the centre or a point
``push:px=..,seed=..``                              per-point U(-px, px) jitter (seeded)
``mask:box=r0,c0,r1,c1``                            remove points with r0 <= row < r1, c0 <= col < c1
``mask:circle=r,c,radius``                          remove points within ``radius`` of (r, c)
``mask:fraction=f,seed=s``                          remove a seeded random fraction f of the points
``mix:index=i,mode=stack|left-right|box[,box=..]``  mix with cloud i of the same store (and decoder)
``noise:std=..,seed=..``                            latents += N(0, (std * sigma_d)^2), sigma_d = the
                                                    store's train latent std per dimension
=================================================  ==============================================

**Exact mode** (``exact`` in an edit, or ``exact=True`` for all): plain geometric edits move
the positions only, so the decoder still sees offsets in the *unturned* frame and a turned or
mirrored cloud decodes to an approximation (paper Fig. 5). In exact mode translate / rotate /
flip / scale are not applied to the points at all: the state keeps an affine ``query_map``
from the displayed (output) frame to the cloud's own frame, and rendering decodes the
unedited cloud at the inverse-transformed query points, R'(q) = R(T^-1 q). That is the
transformed reconstruction itself, for any angle; quarter turns and flips use exact integer
matrices, so on the pixel grid they equal ``torch.rot90`` / ``torch.flip`` of the
reconstruction. Later point edits (push, mask, mix, approximate moves) act in the displayed
frame: positions are mapped out through the inverse of ``query_map``, edited, and mapped back.

**D = 1, 3** (:mod:`arc.geometry`: tensor order; axes ``h`` = last, ``v``, ``d`` = 3-D slices): ``dx``
moves along the last axis (time in 1-D), ``dy`` along rows, ``by=`` / pivots ``at=`` take D numbers
(``row``/``col`` are 2-D only); ``flip:axis=h|v|d``; 3-D ``rotate`` turns about ``axis=d|v|h`` (default
``d``: every slice alike), 1-D has none; ``box=`` is the low then the high corner (2·D numbers),
``circle=`` a centre and radius (D + 1); ``left-right`` splits the last axis; the rest as in 2-D.

Mixing decodes the other cloud's points with this cloud's colour transform (clouds live in
the standardised fitting space; the mix takes its contrast from the first cloud).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from arc.augment import Mask, Push
from arc.cloud import CloudBatch
from arc.geometry import Affine, image_centre

__all__ = ["EditError", "Edit", "EditState", "EDITS", "parse_edit", "apply_edit", "apply_edits"]


class EditError(ValueError):
    """An edit is unknown, malformed, or cannot be applied to this cloud."""


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Edit:
    """One parsed edit: its ``kind``, typed ``params`` and the ``exact`` flag; ``text`` is the spec as written."""

    kind: str
    params: dict[str, Any]
    exact: bool = False
    text: str = ""

    @property
    def title(self) -> str:
        """A short human-readable label, e.g. ``rotate deg=45 (exact)``."""
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"{self.kind} {shown}".strip() + (" (exact)" if self.exact else "")


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(kind: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EditError(f"{kind}: {key} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise EditError(f"{kind}: {key} must be finite, got {text!r}")
    return value


def _integer(kind: str, key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EditError(f"{kind}: {key} must be an integer, got {text!r}") from None


# key -> (the 2-D count and spelling, the counts for D = 1, 2, 3 and their spelling)
_LISTS = {"box": (4, "r0,c0,r1,c1", (2, 4, 6), "2·D: t0,t1 in 1-D, s0,r0,c0,s1,r1,c1 in 3-D"),
          "circle": (3, "r,c,radius", (2, 3, 4), "D + 1: t,radius in 1-D, s,r,c,radius in 3-D"),
          "by": (2, "dy,dx", (1, 2, 3), "D: dt in 1-D, ds,dy,dx in 3-D"),
          "at": (2, "row,col", (1, 2, 3), "D: t in 1-D, s,r,c in 3-D")}


def _numbers(kind: str, key: str, text: str) -> tuple[float, ...]:
    """A list of numbers whose count fits some D (:data:`_LISTS`); the cloud's D is checked when applied."""
    parts = text.split(",")
    count, shown, counts, general = _LISTS[key]
    if len(parts) not in counts:
        raise EditError(f"{kind}: {key} takes {count} comma-separated numbers {shown} for an image ({general}), "
                        f"got {text!r}")
    return tuple(_number(kind, key, part) for part in parts)


def _choice(*options: str) -> Callable[[str, str, str], str]:
    def parse(kind: str, key: str, text: str) -> str:
        if text not in options:
            raise EditError(f"{kind}: {key} must be one of {'|'.join(options)}, got {text!r}")
        return text

    return parse


def _text(kind: str, key: str, text: str) -> str:
    return text


# kind -> key -> (parser, default); default ``...`` means required.
EDITS: dict[str, dict[str, tuple[Callable[[str, str, str], Any], Any]]] = {
    "translate": {"dx": (_number, 0.0), "dy": (_number, 0.0), "by": (_numbers, None)},
    "rotate": {"deg": (_number, ...), "row": (_number, None), "col": (_number, None), "at": (_numbers, None),
               "axis": (_choice("d", "v", "h"), None)},
    "flip": {"axis": (_choice("h", "v", "d"), ...)},
    "scale": {"factor": (_number, ...), "row": (_number, None), "col": (_number, None), "at": (_numbers, None)},
    "push": {"px": (_number, ...), "seed": (_integer, 0)},
    "mask": {"box": (_numbers, None), "circle": (_numbers, None), "fraction": (_number, None), "seed": (_integer, None)},
    "mix": {"index": (_integer, ...), "mode": (_choice("stack", "left-right", "box"), "left-right"), "box": (_numbers, None),
            "split": (_text, None)},
    "noise": {"std": (_number, ...), "seed": (_integer, 0)},
}
GEOMETRIC = ("translate", "rotate", "flip", "scale")
_LIST_KEYS = tuple(_LISTS)


def _tokens(kind: str, body: str) -> tuple[dict[str, str], bool]:
    """Split ``key=value,...``; a token without ``=`` continues the previous list value (box, circle)."""
    values: dict[str, str] = {}
    exact, last = False, None
    for token in (t.strip() for t in body.split(",")) if body.strip() else ():
        if not token:  # a stray or trailing comma
            continue
        if token == "exact":
            exact, last = True, None
        elif "=" in token:
            key, _, value = token.partition("=")
            key = key.strip()
            if key in values:
                raise EditError(f"{kind}: parameter {key!r} given twice")
            values[key], last = value.strip(), key
        elif last in _LIST_KEYS:
            values[last] += "," + token
        else:
            raise EditError(f"{kind}: malformed parameter {token!r}; expected key=value")
    return values, exact


def _flag(kind: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise EditError(f"{kind}: exact must be true or false, got {text!r}")


def parse_edit(text: str, exact: bool = False) -> Edit:
    """Parse ``name:key=value,...`` (table in the module docstring) into an :class:`Edit`.

    ``exact`` (or an ``exact`` / ``exact=true`` token) turns on exact mode for geometric edits;
    ``exact`` given for a non-geometric edit is an error, the global default is ignored there.
    Raises :class:`EditError` naming the problem.
    """
    kind, _, body = text.partition(":")
    kind = kind.strip()
    if kind not in EDITS:
        raise EditError(f"unknown edit {kind!r} in {text!r}; valid edits: {', '.join(EDITS)}")
    values, own_exact = _tokens(kind, body)
    if "exact" in values:
        own_exact = _flag(kind, values.pop("exact"))
        explicit = True
    else:
        explicit = own_exact
    schema = EDITS[kind]
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise EditError(f"{kind}: unknown parameter(s) {unknown}; valid: {', '.join(schema)}")
    params: dict[str, Any] = {}
    for key, (parse, default) in schema.items():
        if key in values:
            params[key] = parse(kind, key, values[key])
        elif default is ...:
            raise EditError(f"{kind}: missing parameter {key!r} (e.g. {_example(kind)})")
        elif default is not None:
            params[key] = default
    _check(kind, params)
    if explicit and own_exact and kind not in GEOMETRIC:
        raise EditError(f"{kind}: exact mode applies to {', '.join(GEOMETRIC)} only")
    is_exact = kind in GEOMETRIC and (own_exact if explicit else exact)
    return Edit(kind, params, is_exact, text)


def _example(kind: str) -> str:
    return {
        "translate": "translate:dx=5,dy=0", "rotate": "rotate:deg=45", "flip": "flip:axis=h",
        "scale": "scale:factor=1.5", "push": "push:px=2,seed=0", "mask": "mask:box=0,0,8,8",
        "mix": "mix:index=3,mode=left-right", "noise": "noise:std=0.1,seed=0",
    }[kind]


def _check(kind: str, params: dict[str, Any]) -> None:
    if ("row" in params) != ("col" in params):
        raise EditError(f"{kind}: give both row and col of the pivot, or neither (image centre)")
    if "at" in params and "row" in params:
        raise EditError(f"{kind}: give the pivot as row=,col= or as at=, not both")
    if "by" in params and (params["dx"] or params["dy"]):
        raise EditError("translate: give the move as dx=,dy= or as by=, not both")
    if kind == "scale" and params["factor"] <= 0:
        raise EditError(f"scale: factor must be > 0, got {params['factor']:g}")
    if kind in ("push", "noise"):
        key = "px" if kind == "push" else "std"
        if params[key] < 0:
            raise EditError(f"{kind}: {key} must be >= 0, got {params[key]:g}")
    if kind == "mask":
        given = [key for key in ("box", "circle", "fraction") if key in params]
        if len(given) != 1:
            raise EditError(f"mask: give exactly one of box=r0,c0,r1,c1, circle=r,c,radius or fraction=f, got {given or 'none'}")
        if "seed" in params and "fraction" not in params:
            raise EditError("mask: seed= is only used with fraction=")
        if "fraction" in params and not 0.0 <= params["fraction"] < 1.0:
            raise EditError(f"mask: fraction must be in [0, 1), got {params['fraction']:g}")
        if "circle" in params and params["circle"][-1] < 0:
            raise EditError(f"mask: circle radius must be >= 0, got {params['circle'][-1]:g}")
    if kind == "mix":
        if params["mode"] == "box" and "box" not in params:
            raise EditError("mix: mode=box needs box=r0,c0,r1,c1")
        if params["mode"] != "box" and "box" in params:
            raise EditError(f"mix: box= is only used with mode=box, not mode={params['mode']}")
    if "box" in params:
        half = len(params["box"]) // 2
        if any(hi <= lo for lo, hi in zip(params["box"][:half], params["box"][half:])):
            raise EditError(f"{kind}: box must have r0 < r1 and c0 < c1 (low < high on every axis), "
                            f"got {_fmt(params['box'])}")


# ---------------------------------------------------------------- applying


@dataclass(frozen=True)
class EditState:
    """One edited cloud: ``cloud`` (a batch of one, positions in the cloud's own frame) and
    ``query_map`` from displayed (output) coordinates to that frame (identity unless exact edits ran;
    the default identity takes the cloud's D)."""

    cloud: CloudBatch
    query_map: Affine = field(default_factory=Affine)

    def __post_init__(self) -> None:
        if self.query_map.dims != self.cloud.dims:
            if not self.query_map.is_identity:
                raise EditError(f"a {self.query_map.dims}-D query map for a {self.cloud.dims}-D cloud")
            object.__setattr__(self, "query_map", Affine.identity(self.cloud.dims))

    def displayed_positions(self) -> Tensor:
        """[N, D] latent positions as they appear in the output image."""
        if self.query_map.is_identity:
            return self.cloud.pos
        return self.query_map.inverse()(self.cloud.pos)


def _centre(cloud: CloudBatch) -> tuple[float, ...]:
    """The centre of the sample of a one-cloud batch ((row, col) in 2-D), in sample points."""
    return tuple(image_centre(cloud.size[0], torch.float64).tolist())


def _sized(kind: str, key: str, values: tuple[float, ...], dims: int) -> tuple[float, ...]:
    """``values`` of list parameter ``key``, or :class:`EditError` unless their count fits D = ``dims``."""
    count, _, counts, general = _LISTS[key]
    if len(values) != counts[dims - 1]:
        raise EditError(f"{kind}: {key} has {len(values)} numbers; a {dims}-D cloud needs {counts[dims - 1]} ({general})")
    return values


def _pivot(kind: str, cloud: CloudBatch, params: dict[str, Any]) -> tuple[float, ...]:
    if "at" in params:
        return _sized(kind, "at", params["at"], cloud.dims)
    if "row" in params:
        if cloud.dims != 2:
            raise EditError(f"{kind}: row=,col= name a 2-D pivot; give at= with {cloud.dims} number(s) "
                            f"for a {cloud.dims}-D cloud")
        return params["row"], params["col"]
    return _centre(cloud)


def _move(params: dict[str, Any], dims: int) -> tuple[float, ...]:
    """The translation in tensor order: ``by``, or dx along the last axis and dy along the rows."""
    if "by" in params:
        return _sized("translate", "by", params["by"], dims)
    if dims == 1:
        if params["dy"]:
            raise EditError("translate: a 1-D cloud has one axis; move it with dx= (or by=)")
        return (params["dx"],)
    return (0.0,) * (dims - 2) + (params["dy"], params["dx"])


def geometric_map(edit: Edit, cloud: CloudBatch) -> Affine:
    """The affine map T (displayed frame) of a translate / rotate / flip / scale edit."""
    p = edit.params
    try:
        if edit.kind == "translate":
            return Affine.translation(*_move(p, cloud.dims))
        if edit.kind == "rotate":
            return Affine.rotation(p["deg"], _pivot(edit.kind, cloud, p), p.get("axis"))
        if edit.kind == "flip":
            return Affine.flip(p["axis"], _centre(cloud))
        if edit.kind == "scale":
            return Affine.scaling(p["factor"], _pivot(edit.kind, cloud, p))
    except EditError:
        raise
    except ValueError as err:  # an axis or a rotation the cloud's D lacks
        raise EditError(f"{edit.kind}: {err}") from None
    raise EditError(f"{edit.kind} is not a geometric edit")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _keep(cloud: CloudBatch, keep: Tensor) -> CloudBatch:
    return replace(cloud, pos=cloud.pos[keep], lat=cloud.lat[keep], offset=keep.sum().reshape(1).to(torch.long))


def _inside_box(kind: str, pos: Tensor, box: tuple[float, ...]) -> Tensor:
    """[N] bool: pos [N, D] lies in the half-open box from the low corner box[:D] to the high one box[D:]."""
    d = pos.shape[1]
    box = _sized(kind, "box", box, d)
    lo, hi = torch.tensor(box[:d], dtype=pos.dtype), torch.tensor(box[d:], dtype=pos.dtype)
    return ((pos >= lo) & (pos < hi)).all(dim=1)


def _mask(cloud: CloudBatch, params: dict[str, Any]) -> CloudBatch:
    if "fraction" in params:
        return Mask(params["fraction"])(cloud, _generator(params.get("seed", 0)))
    if "box" in params:
        return _keep(cloud, ~_inside_box("mask", cloud.pos, params["box"]))
    *centre, radius = _sized("mask", "circle", params["circle"], cloud.dims)
    return _keep(cloud, (cloud.pos - torch.tensor(centre, dtype=cloud.pos.dtype)).norm(dim=1) > radius)


def _mix(cloud: CloudBatch, other: CloudBatch, params: dict[str, Any]) -> CloudBatch:
    """Points of ``cloud`` and ``other`` (both in displayed coordinates) chosen by the mix mode."""
    mode = params["mode"]
    if mode == "stack":
        own, theirs = torch.ones(cloud.num_points, dtype=torch.bool), torch.ones(other.num_points, dtype=torch.bool)
    elif mode == "left-right":  # split at the centre of the last axis (columns; time in 1-D)
        middle = _centre(cloud)[-1]
        own, theirs = cloud.pos[:, -1] < middle, other.pos[:, -1] >= middle
    else:
        own, theirs = ~_inside_box("mix", cloud.pos, params["box"]), _inside_box("mix", other.pos, params["box"])
    pos = torch.cat([cloud.pos[own], other.pos[theirs].to(cloud.pos)])
    lat = torch.cat([cloud.lat[own], other.lat[theirs].to(cloud.lat)])
    return replace(cloud, pos=pos, lat=lat, offset=torch.tensor([pos.shape[0]], dtype=torch.long))


Lookup = Callable[[int, Optional[str]], CloudBatch]


def apply_edit(
    state: EditState,
    edit: Edit,
    neighbours: int,
    lookup: Optional[Lookup] = None,
    latent_std: Optional[Tensor] = None,
) -> EditState:
    """Apply one edit to a one-cloud state and return the new state (inputs are not modified).

    neighbours: the decoder's n (an edit leaving fewer points is refused);
    lookup(index, split or None) -> the other cloud, for ``mix``;
    latent_std [z]: per-dimension scale of ``noise`` (the store's train std; 1 when None).
    """
    if len(state.cloud) != 1:
        raise EditError(f"edits apply to one cloud at a time, got a batch of {len(state.cloud)}")
    if edit.kind in GEOMETRIC and edit.exact:
        return replace(state, query_map=geometric_map(edit, state.cloud).inverse().then(state.query_map))
    shown = replace(state.cloud, pos=state.displayed_positions())
    p = edit.params
    if edit.kind in GEOMETRIC:
        edited = replace(shown, pos=geometric_map(edit, shown)(shown.pos))
    elif edit.kind == "push":
        edited = Push(p["px"])(shown, _generator(p["seed"]))
    elif edit.kind == "mask":
        edited = _mask(shown, p)
    elif edit.kind == "noise":
        scale = torch.ones(shown.lat.shape[1]) if latent_std is None else latent_std.to(shown.lat).reshape(-1)
        if scale.numel() != shown.lat.shape[1]:
            raise EditError(f"noise: latent_std has {scale.numel()} entries for {shown.lat.shape[1]}-d latents")
        draws = torch.randn(tuple(shown.lat.shape), generator=_generator(p["seed"])).to(shown.lat)
        edited = replace(shown, lat=shown.lat + p["std"] * scale * draws)
    elif edit.kind == "mix":
        if lookup is None:
            raise EditError("mix: no other clouds are available here")
        other = lookup(p["index"], p.get("split"))
        if other.dims != shown.dims:
            raise EditError(f"mix: cloud {p['index']} is {other.dims}-D, this one {shown.dims}-D")
        if other.lat.shape[1] != shown.lat.shape[1]:
            raise EditError(f"mix: cloud {p['index']} has {other.lat.shape[1]}-d latents, this one {shown.lat.shape[1]}-d")
        edited = _mix(shown, other, p)
    else:
        raise EditError(f"unknown edit {edit.kind!r}")
    if edited.num_points < neighbours:
        raise EditError(
            f"{edit.text or edit.kind}: leaves {edited.num_points} points; the decoder needs at least {neighbours}"
        )
    pos = edited.pos if state.query_map.is_identity else state.query_map(edited.pos)
    return replace(state, cloud=replace(edited, pos=pos))


def apply_edits(
    cloud: CloudBatch,
    edits: Sequence[Edit],
    neighbours: int,
    lookup: Optional[Lookup] = None,
    latent_std: Optional[Tensor] = None,
) -> list[EditState]:
    """Apply ``edits`` cumulatively to a one-cloud batch; one state per edit (the last is the final result)."""
    state, states = EditState(cloud), []
    for edit in edits:
        state = apply_edit(state, edit, neighbours, lookup, latent_std)
        states.append(state)
    return states

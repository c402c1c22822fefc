"""Per-sample INRs as stacks of weights: B small MLPs evaluated and differentiated with batched matmuls.

An INR maps a sample point's coordinates x in [-1, 1]^D to its C channel values, fitted in [-1, 1]
(sample * 2 - 1, as SIREN fits images; :meth:`INRConfig.to_fit_space`). A sample is [C, *S] with
D = len(S) in {1, 2, 3} (a signal [C, L], an image [C, H, W], a volume [C, D, H, W]); its coordinates
name the axes from the last (:func:`sample_coordinates`): 1-D (t,), 2-D (x = column, y = row), 3-D
(x = column, y = row, z = slice). Three kinds, each an MLP with widths ``[D, *hidden, C]``:

- ``siren`` (Sitzmann et al. 2020): h = sin(ω₀ (W h + b)) in every hidden layer, a linear output.
  Init (the authors' code): first layer W ~ U(-1/n, 1/n), later layers W ~ U(-√(6/n)/ω₀, √(6/n)/ω₀),
  biases U(-1/√n, 1/√n) (``nn.Linear``'s default), n = fan-in; ω₀ = 30 in every sine layer.
  With ``dwsnets`` (the flag for the SIRENs of the DWSNets datasets, as the thesis's App. C describes
  them and the DWSNets code has them): every sine layer, the first included, W ~ U(-√(6/n)/ω₀, √(6/n)/ω₀),
  sine-layer biases 0, the output layer ``nn.Linear``'s default, and the image fitted in [0, 1] as the
  output + 0.5 (:meth:`INRConfig.to_fit_space`).
- ``relu``: h = relu(W h + b), ``nn.Linear``'s default init (W, b ~ U(-1/√n, 1/√n)).
- ``fourier`` (Tancik et al. 2020): the ReLU MLP on γ(x) = [cos 2πBx, sin 2πBx], B [F, D] ~ N(0, σ²)
  drawn once from ``feature_seed`` (a fixed encoding, shared by every sample, not a weight).

Weights of sample i are one flat vector [P] (per layer W row-major [out, in], then b [out]);
in memory a batch keeps one tensor per layer, [B, out, in] and [B, out], so the matmuls are
batched (``bmm``); on a full grid a SIREN's first layer is separable along every axis (:class:`Grid`).
:func:`forward_backward` is the hand-written gradient of the loss
Σ_i mean_(points, channels) (y_i - t_i)², exact per sample (sample i's gradient depends only on
its own weights and pixels); :mod:`arc.baselines.reference` checks it against autograd.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from arc.seeding import derive_generator

KINDS = ("siren", "relu", "fourier")
DIMS = (1, 2, 3)  # spatial axes of a sample


class INRError(ValueError):
    """Invalid INR settings or inputs (the message names the setting)."""


@dataclass(frozen=True)
class INRConfig:
    """An INR architecture: ``kind`` (siren | relu | fourier), ``hidden`` widths (e.g. [32, 32]),
    ``omega0`` (siren), ``fourier_features`` F and ``fourier_scale`` σ (fourier), ``feature_seed``;
    ``dwsnets`` (siren): the DWSNets SIREN's init and output offset (module docstring)."""

    kind: str = "siren"
    hidden: tuple[int, ...] = (32, 32)
    omega0: float = 30.0
    fourier_features: int = 16
    fourier_scale: float = 10.0
    feature_seed: int = 0
    dwsnets: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        if self.kind not in KINDS:
            raise INRError(f"inr.kind {self.kind!r} is not one of {list(KINDS)}")
        if not self.hidden or min(self.hidden) < 1:
            raise INRError(f"inr.hidden must be positive widths, e.g. [32, 32]; got {list(self.hidden)}")
        if self.omega0 <= 0 or self.fourier_features < 1 or self.fourier_scale <= 0:
            raise INRError("inr.omega0, inr.fourier_features and inr.fourier_scale must be positive")
        if self.dwsnets and self.kind != "siren":
            raise INRError(f"inr.dwsnets is a SIREN variant; inr.kind is {self.kind!r}")

    def key_settings(self) -> dict:
        """The settings that name a weight store (``dwsnets`` only when set, so the stores of the other
        INRs keep the keys they had before the flag)."""
        settings = asdict(self)
        if not self.dwsnets:
            settings.pop("dwsnets")
        return settings

    def to_fit_space(self, pixels: Tensor) -> Tensor:
        """The fitting target of pixel values in [0, 1]: 2x - 1, or x - 0.5 (``dwsnets``: output + 0.5 = image)."""
        return pixels - 0.5 if self.dwsnets else pixels * 2 - 1

    def from_fit_space(self, out: Tensor) -> Tensor:
        """Pixel values of INR outputs (the inverse of :meth:`to_fit_space`), not clamped."""
        return out + 0.5 if self.dwsnets else (out + 1) * 0.5

    def input_dim(self, dims: int = 2) -> int:
        """Width of the first layer's input for samples of ``dims`` axes: D coordinates, or 2F Fourier features."""
        check_dims(dims)
        return 2 * self.fourier_features if self.kind == "fourier" else int(dims)

    def shapes(self, channels: int, dims: int = 2) -> list[tuple[int, int]]:
        """(out, in) of every layer, e.g. [(32, 2), (32, 32), (1, 32)] for widths [2, 32, 32, 1] (D = 2)."""
        widths = [self.input_dim(dims), *self.hidden, int(channels)]
        return list(zip(widths[1:], widths[:-1]))

    def param_count(self, channels: int, dims: int = 2) -> int:
        """P, the length of one sample's flat weight vector (samples of ``channels`` channels and ``dims`` axes)."""
        return sum(o * i + o for o, i in self.shapes(channels, dims))

    def scales(self) -> list[float]:
        """ω of each hidden layer's activation: ω₀ for siren (sine layers), 1 otherwise (relu layers)."""
        return [self.omega0 if self.kind == "siren" else 1.0] * len(self.hidden)


def check_dims(dims: int) -> None:
    """INRError unless ``dims`` (a sample's spatial axes) is 1, 2 or 3."""
    if dims not in DIMS:
        raise INRError(f"samples must have 1, 2 or 3 spatial axes ([C, L], [C, H, W], [C, D, H, W]); got {dims}")


def sin_cos(angles: Tensor, want_cos: bool = True, inplace: bool = False) -> tuple[Tensor, Tensor | None]:
    """(sin, cos) of ``angles`` (cos only with ``want_cos``; sin written into ``angles`` with ``inplace``).

    On the CPU, float32 and contiguous, through NumPy's vectorised ufuncs (zero-copy views, GIL released):
    in this torch build ``torch.sin``/``cos`` run at ≈ 1.3 ns an element against ≈ 0.55 ns for NumPy's
    AVX-512 kernels at the same accuracy (``docs/benchmarks.md``, "Per-sample INR fitting"); elsewhere torch.
    """
    if angles.device.type != "cpu" or angles.dtype != torch.float32 or not angles.is_contiguous() or angles.requires_grad:
        cos = angles.cos() if want_cos else None
        return (angles.sin_() if inplace else angles.sin()), cos
    values = angles.numpy()
    cos = None
    if want_cos:
        cos = torch.empty_like(angles)
        np.cos(values, out=cos.numpy())
    sin = angles if inplace else torch.empty_like(angles)
    np.sin(values, out=sin.numpy())
    return sin, cos


def axis_coordinates(size: int, device: torch.device | str = "cpu") -> Tensor:
    """[size] float32 positions in [-1, 1] of the points of one axis (-1 + 2i/(size-1); 0 for one point)."""
    return torch.linspace(-1.0, 1.0, size, device=device) if size > 1 else torch.zeros(1, device=device)


def sample_coordinates(shape: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """[ΠS, D] float32 coordinates in [-1, 1] of every point of a grid of ``shape`` S, row-major; column k
    is the position along axis D-1-k (the axes from the last: x = column, y = row, z = slice)."""
    check_dims(len(shape))
    grids = torch.meshgrid(*[axis_coordinates(int(n), device) for n in shape], indexing="ij")
    return torch.stack([g.reshape(-1) for g in reversed(grids)], dim=1)


def pixel_coordinates(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """[H*W, 2] (x, y) of an image's pixels, row-major (pixel (i, j) -> (-1 + 2j/(W-1), -1 + 2i/(H-1)));
    :func:`sample_coordinates` of (H, W)."""
    return sample_coordinates((height, width), device)


def encode(config: INRConfig, coords: Tensor) -> Tensor:
    """The first layer's input for ``coords`` [..., D]: the coordinates, or γ(x) [..., 2F] (fourier)."""
    if config.kind != "fourier":
        return coords
    generator = derive_generator(config.feature_seed, "fourier-features")
    matrix = torch.randn(config.fourier_features, coords.shape[-1], generator=generator) * config.fourier_scale
    angles = 2 * math.pi * coords @ matrix.to(coords.device, coords.dtype).t()
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


@dataclass
class WeightStack:
    """Weights of B INRs: ``weights[l]`` [B, out, in], ``biases[l]`` [B, out] (float32, contiguous)."""

    weights: list[Tensor]
    biases: list[Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def tensors(self) -> list[Tensor]:
        """Every tensor, layer by layer (W then b): the optimiser's parameters."""
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def flat(self) -> Tensor:
        """[B, P] flat weight vectors (per layer W row-major, then b)."""
        return torch.cat([t.reshape(len(self), -1) for t in self.tensors()], dim=1)

    @classmethod
    def from_flat(cls, flat: Tensor, shapes: Sequence[tuple[int, int]]) -> "WeightStack":
        """The stack of [B, P] flat vectors for layers of ``shapes`` (copies, contiguous)."""
        expected = sum(o * i + o for o, i in shapes)
        if flat.ndim != 2 or flat.shape[1] != expected:
            raise INRError(f"flat weights of shape {tuple(flat.shape)} do not fit layers {list(shapes)} (P = {expected})")
        weights, biases, at = [], [], 0
        for out, inp in shapes:
            weights.append(flat[:, at : at + out * inp].reshape(-1, out, inp).clone())
            at += out * inp
            biases.append(flat[:, at : at + out].clone())
            at += out
        return cls(weights, biases)

    def select(self, rows: Tensor | slice) -> "WeightStack":
        """The stack of samples ``rows`` (copies)."""
        return WeightStack([w[rows].clone() for w in self.weights], [b[rows].clone() for b in self.biases])

    def zeros_like(self) -> "WeightStack":
        return WeightStack([torch.zeros_like(w) for w in self.weights], [torch.zeros_like(b) for b in self.biases])


def init_stack(config: INRConfig, channels: int, generators: Sequence[torch.Generator], dims: int = 2) -> WeightStack:
    """One INR per generator for samples of ``channels`` channels and ``dims`` axes, drawn layer by layer
    (W then b) from it (see the module docstring)."""
    shapes = config.shapes(channels, dims)
    weights: list[list[Tensor]] = [[] for _ in shapes]
    biases: list[list[Tensor]] = [[] for _ in shapes]
    for generator in generators:
        for layer, (out, inp) in enumerate(shapes):
            last = layer == len(shapes) - 1
            if config.kind != "siren" or (config.dwsnets and last):
                bound = 1.0 / math.sqrt(inp)
            else:
                bound = 1.0 / inp if layer == 0 and not config.dwsnets else math.sqrt(6.0 / inp) / config.omega0
            weights[layer].append((torch.rand(out, inp, generator=generator) * 2 - 1) * bound)
            bias = (torch.rand(out, generator=generator) * 2 - 1) / math.sqrt(inp)
            biases[layer].append(bias.zero_() if config.dwsnets and not last else bias)
    return WeightStack([torch.stack(w) for w in weights], [torch.stack(b) for b in biases])


class Grid:
    """Every point of a grid of shape S (``Grid(H, W)``, ``Grid(L)``, ``Grid(D, H, W)``), row-major: the
    inputs of a full-sample step. A SIREN's first layer is then separable, ω(w·x_p + b) = Σ_axes α_axis,
    so its sines and cosines come from the ΣS per-axis angles by the angle-sum identities instead of
    ΠS evaluations of sin and cos."""

    def __init__(self, *shape: int) -> None:
        check_dims(len(shape))
        if min(shape) < 1:
            raise INRError(f"a grid needs positive sizes, got {shape}")
        self.shape = tuple(int(n) for n in shape)
        self._axes: dict[torch.device, list[Tensor]] = {}

    def axes(self, device: torch.device) -> list[Tensor]:
        """[:func:`axis_coordinates`] of every axis, in axis order, made once per device."""
        if device not in self._axes:
            self._axes[device] = [axis_coordinates(n, device) for n in self.shape]
        return self._axes[device]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and other.shape == self.shape

    def __repr__(self) -> str:
        return f"Grid{self.shape}"

    @property
    def dims(self) -> int:
        return len(self.shape)

    def coordinates(self, device: torch.device | str = "cpu") -> Tensor:
        """[ΠS, D], :func:`sample_coordinates`."""
        return sample_coordinates(self.shape, device)


def _sine_on_grid(omega: float, w: Tensor, b: Tensor, grid: Grid, want_cos: bool) -> tuple[Tensor, Tensor | None]:
    """(sin, cos) [B, ΠS, n] of a = ω(W x + b) for a first layer ``w`` [B, n, D], ``b`` [B, n] on ``grid``:
    the last axis's angles (with the bias) combined with each earlier axis's in turn, sin(β + α) = sβ cα + cβ sα,
    cos(β + α) = cβ cα - sβ sα."""
    axes = grid.shape[::-1]  # coordinate k runs along axis D-1-k
    coords = grid.axes(w.device)[::-1]
    alpha = torch.addcmul(b.unsqueeze(1), coords[0][None, :, None], w[:, None, :, 0]).mul_(omega)  # [B, S_last, n]
    if len(axes) == 1:
        return sin_cos(alpha, want_cos, inplace=True)
    sa, ca = sin_cos(alpha, inplace=True)
    sa, ca = sa[:, None], ca[:, None]  # [B, 1, M, n]: the axes combined so far
    for k in range(1, len(axes)):
        beta = (coords[k][None, :, None] * w[:, None, :, k]).mul_(omega)  # [B, S, n]
        sb, cb = sin_cos(beta, inplace=True)
        sb, cb = sb[:, :, None], cb[:, :, None]
        shape = (w.shape[0], 1, axes[k] * sa.shape[2], w.shape[1])
        sin = torch.mul(sb, ca).addcmul_(cb, sa).reshape(shape)
        cos = torch.mul(cb, ca).addcmul_(sb, sa, value=-1.0).reshape(shape) if want_cos or k + 1 < len(axes) else None
        sa, ca = sin, cos
    return sa[:, 0], None if ca is None else ca[:, 0]


def _grid_first_layer_grad(dz: Tensor, grid: Grid, omega: float, grad_w: Tensor, grad_b: Tensor) -> None:
    """Write ω Σ_p dz_p x_p into ``grad_w`` [B, n, D] and ω Σ_p dz_p into ``grad_b`` [B, n]; ``dz`` [B, ΠS, n]
    on ``grid``, reduced over every axis but one per coordinate (coordinate k depends on axis D-1-k only)."""
    b, _, n = dz.shape
    per_point = dz.reshape(b, *grid.shape, n)
    d = grid.dims
    for k in range(d):
        axis = d - 1 - k
        others = tuple(1 + a for a in range(d) if a != axis)
        along = per_point.sum(dim=others) if others else per_point  # [B, S_axis, n]
        torch.mul(torch.matmul(grid.axes(dz.device)[axis], along), omega, out=grad_w[:, :, k])  # Σ_s x_s along_s
        if axis == 0:
            torch.mul(along.sum(dim=1), omega, out=grad_b)


def forward(config: INRConfig, stack: WeightStack, inputs: Tensor | Grid, keep: bool = False) -> tuple[Tensor, list]:
    """Outputs [B, M, C] of the B INRs at ``inputs`` [B, M, in], [M, in] (shared) or a :class:`Grid`.

    With ``keep``, also what the backward needs, per hidden layer (its input, its derivative source):
    cos of the pre-activation ω(Wh + b) (siren) or the output (relu).
    """
    b = len(stack)
    saved: list = []
    first = 0
    if isinstance(inputs, Grid):
        if config.kind == "siren":
            h, cos = _sine_on_grid(config.omega0, stack.weights[0], stack.biases[0], inputs, keep)
            saved.append((inputs, "grid", cos))
            first = 1
        else:
            inputs = encode(config, inputs.coordinates(stack.weights[0].device))
    if not first:
        h = inputs if inputs.ndim == 3 else inputs.expand(b, *inputs.shape)
    for layer, omega in list(enumerate(config.scales()))[first:]:
        w, bias = stack.weights[layer], stack.biases[layer]
        w_t = (w * omega).transpose(1, 2).contiguous()  # [B, in, out]: BLAS runs faster on it than on a view
        pre = torch.bmm(h, w_t).add_((bias * omega).unsqueeze(1))  # ω(Wh + b)
        if config.kind != "siren":
            if keep:
                saved.append((h, "relu", pre))
            h = pre.relu_()
        else:
            sin, cos = sin_cos(pre, keep, inplace=True)
            if keep:
                saved.append((h, "cos", cos))
            h = sin
    out = torch.baddbmm(stack.biases[-1].unsqueeze(1), h, stack.weights[-1].transpose(1, 2))
    if keep:
        saved.append(h)
    return out, saved


def forward_backward(config: INRConfig, stack: WeightStack, inputs: Tensor | Grid, target: Tensor, grad: WeightStack) -> None:
    """Write d loss / d weights into ``grad`` for loss = Σ_samples mean over pixels and channels of
    (y - target)², ``inputs`` as in :func:`forward`, ``target`` [B, M, C] (:meth:`INRConfig.to_fit_space`)."""
    out, saved = forward(config, stack, inputs, keep=True)
    dy = out.sub_(target).mul_(2.0 / (target.shape[1] * target.shape[2]))  # [B, M, C]
    last = len(stack.weights) - 1
    torch.bmm(dy.transpose(1, 2), saved[-1], out=grad.weights[last])
    torch.sum(dy, dim=1, out=grad.biases[last])
    w_last = stack.weights[last]  # [B, C, width]
    dh = dy * w_last if w_last.shape[1] == 1 else torch.bmm(dy, w_last)  # [B, M, width] (C = 1: a broadcast product)
    for layer in range(last - 1, -1, -1):
        omega = config.scales()[layer]
        h_in, what, kept = saved[layer]
        if what == "relu":
            dz = torch.ops.aten.threshold_backward(dh, kept, 0.0)
        else:  # d loss / d pre-activation, / ω
            dz = dh.mul_(kept)
        if what == "grid":  # the grid's first layer: Σ_p dz_p (x_p, y_p, 1) from row and column sums
            _grid_first_layer_grad(dz, h_in, omega, grad.weights[layer], grad.biases[layer])
        else:
            torch.bmm(dz.transpose(1, 2), h_in, out=grad.weights[layer]).mul_(omega)
            torch.sum(dz, dim=1, out=grad.biases[layer]).mul_(omega)
        if layer:
            dh = torch.bmm(dz, stack.weights[layer] * omega)

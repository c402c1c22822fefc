"""Batched fitting of latent clouds against a frozen decoder.

The hot loop, on one screen below: :func:`fit_group` runs Adam on a group's latents with the
gradient of :class:`LatentGradient` ("dense": hand-written through the frozen decoder, no autograd,
no weight gradients) or of :class:`~arc.field.factored.FactoredGradient` ("factored": the first layer
per latent); ``fit.engine = "auto"`` picks per device and group (:func:`resolve_engine`). Images are
packed into groups whose per-step supervised pixel count fits the pixel budget; each group is a
:class:`~arc.field.group.FieldGroup` fitted with one Adam over its flat latent tensor. Because the loss is the sum of per-image mean squared errors and Adam is
element-wise, the result of an image does not depend on which images share its group.

Execution: on the CPU, groups run concurrently, one per intra-op thread, each with
single-threaded kernels (small matmul blocks stay in cache and no kernel waits on a
thread-pool barrier); on CUDA, groups run one after another on the device while the
next group is prepared on the CPU (sampling, neighbours, tables: batched tensor kernels) in a background thread.
"""
from __future__ import annotations

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.config import ENGINES, FieldConfig, FitConfig
from arc.field.decoder import Decoder
from arc.field.errors import FieldInputError
from arc.field.factored import FactoredGradient
from arc.field.group import FieldGroup, Pass, chunk_size
from arc.field.latent_init import PatchInit

Progress = Callable[[int, Tensor], None]

CPU_MICRO_BATCH = 2048  # pixels per matmul block on CPU, so activations stay in cache
GPU_MICRO_BATCH = 1 << 20  # pixels per matmul block on CUDA: large enough to fill the device, ~2.5 GB of activations
MATMUL_DTYPES = {"32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class FitResult:
    """Fitted clouds (CPU, in input order) and their PSNR [B] on the [0, 1] images."""

    clouds: CloudBatch
    psnr: Tensor


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def adam(params: list, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over ``params``, fused (one kernel for all tensors) on the CPU and CUDA."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


class LatentGradient:
    """The gradient of a group's loss w.r.t. its latents through a frozen decoder, written by hand.

    Only the two big matmul pairs remain: forward h = relu(W1 [lat; off] + b1),
    y = W2 h + b2; backward dh = (W2^T dy) * (h > 0), dlat = W1_lat^T dh, scattered into
    the latent gradient by ``index_add_``. No weight gradients are computed.
    ``dtype`` is the matmul precision (float32, or bfloat16/float16 on CUDA).
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, dtype: torch.dtype = torch.float32, micro_batch: int | None = None) -> None:
        nz = decoder.neighbours * decoder.latent_dim
        w1 = decoder.hidden.weight.detach().to(group.device, dtype)
        self.w1_lat = w1[:, :nz].contiguous()  # [hid, nz]
        self.w1_lat_t = self.w1_lat.t()
        self.w1_off_t = w1[:, nz:].t()  # [2n, hid] (a transposed view; BLAS takes it as is)
        self.b1 = decoder.hidden.bias.detach().to(group.device, dtype)
        self.w2 = decoder.out.weight.detach().to(group.device, dtype)  # [C, hid]
        self.w2_t = self.w2.t()
        self.b2 = decoder.out.bias.detach().to(group.device, dtype)
        # one output channel: dh W1_lat = (mask * dy) (w2^T * W1_lat), which saves one [M, hid] pass
        self.w1_lat_scaled = (self.w2[0][:, None] * self.w1_lat).contiguous() if self.w2.shape[0] == 1 else None
        self.z = decoder.latent_dim
        self.dtype = dtype
        self.group = group
        if micro_batch is None:
            micro_batch = CPU_MICRO_BATCH if group.device.type == "cpu" else min(group.pixel_budget, GPU_MICRO_BATCH)
        self.micro_batch = max(1, int(micro_batch))

    def accumulate(self, latents: Tensor, grad: Tensor, piece: Pass, loss: bool = True) -> Tensor | None:
        """Add d(loss of the pass)/d latents into ``grad`` [K, z]; return the pass loss (0-dim, float64) or None."""
        g = self.group
        total = torch.zeros((), dtype=torch.float64, device=g.device) if loss else None
        for a in range(piece.start, piece.stop, self.micro_batch):
            sl = slice(a, min(a + self.micro_batch, piece.stop))
            idx = g.nbr[sl].reshape(-1)
            rows = idx.numel() // g.field.neighbours
            lat = latents.index_select(0, idx).reshape(rows, -1).to(self.dtype)
            h = torch.addmm(self.b1, g.off[sl].to(self.dtype), self.w1_off_t)
            h.addmm_(lat, self.w1_lat_t)
            h.relu_()
            residual = torch.addmm(self.b2, h, self.w2_t).float() - g.target[sl]
            weight = g.weight[sl]
            if loss:
                total += (weight * residual.square()).sum().double()
            dy = (residual * (2.0 * weight)).to(self.dtype)
            if self.w1_lat_scaled is not None:
                dlat = torch.ops.aten.threshold_backward(dy.expand_as(h), h, 0.0) @ self.w1_lat_scaled
            else:
                dlat = torch.ops.aten.threshold_backward(dy @ self.w2, h, 0.0) @ self.w1_lat
            grad.index_add_(0, idx.long(), dlat.reshape(-1, self.z).to(grad.dtype))  # int32 indices: a slow path on the CPU
        return total

    def step(self, latents: Tensor, grad: Tensor, passes: Sequence[Pass], loss: bool = False) -> Tensor | None:
        """:meth:`accumulate` over the passes of one optimisation step; return their loss (float64) or None."""
        totals = [self.accumulate(latents, grad, piece, loss) for piece in passes]
        return sum(totals) if loss else None


def resolve_engine(engine: str, group: FieldGroup) -> str:
    """The engine "auto" stands for: "factored" on the CPU, "dense" on CUDA until the device's figures are
    measured. Measured on the 2-core CPU (``docs/benchmarks.md``, "Factored engine"): factored faster than
    dense on 28² digits, 16³ volumes, 1-D signals and full-resolution photos."""
    if engine != "auto":
        return engine
    return "factored" if group.device.type == "cpu" else "dense"


def latent_gradient(engine: str, decoder: Decoder, group: FieldGroup, dtype: torch.dtype = torch.float32):
    """The step gradient of ``engine`` ("dense": :class:`LatentGradient`, "factored": :class:`FactoredGradient`,
    "auto": :func:`resolve_engine`)."""
    engine = resolve_engine(engine, group)
    if engine == "factored":
        cpu = group.device.type == "cpu"
        return FactoredGradient(decoder, group, dtype, CPU_MICRO_BATCH if cpu else min(group.pixel_budget, GPU_MICRO_BATCH))
    if engine == "dense":
        return LatentGradient(decoder, group, dtype)
    raise ValueError(f"fit.engine must be one of {ENGINES}, got {engine!r}")


def fit_group(
    group: FieldGroup, decoder: Decoder, fit: FitConfig, on_step: Optional[Callable[[int], None]] = None
) -> Tensor:
    """Run ``fit.steps`` Adam steps on the group's latents with the decoder frozen; return [B] PSNR.

    ``on_step(len(group))`` is called after every step (progress in image-steps).
    """
    cuda = group.device.type == "cuda"
    gradient = latent_gradient(fit.engine, decoder, group, MATMUL_DTYPES[fit.precision] if cuda else torch.float32)
    latents = group.latents
    grad = torch.zeros_like(latents)
    latents.grad = grad
    optimiser = adam([latents], fit.lr, group.device)
    try:
        with torch.no_grad(), cuda_tf32(fit.precision == "tf32") if cuda else nullcontext():
            for step in range(fit.steps):
                grad.zero_()
                gradient.step(latents, grad, group.passes(step))
                optimiser.step()
                if on_step is not None:
                    on_step(len(group))
            latents.grad = None
            return group.psnr(decoder)
    except torch.cuda.OutOfMemoryError as error:
        raise torch.cuda.OutOfMemoryError(
            f"fitting ran out of GPU memory with fit.pixel_budget={group.pixel_budget} pixels per pass (two shards "
            "run at once on CUDA): lower it, e.g. --data.fit.pixel_budget 500000; it bounds memory and does not "
            f"change the results or the store. ({error})"
        ) from error


def pack_groups(sizes: Sequence[Sequence[int]], pixel_fraction: float, pixel_budget: int) -> list[list[int]]:
    """Consecutive image numbers packed so each group's per-step supervised pixels fit the budget
    (``sizes``: each sample's shape S, an image's (H, W)).

    An image whose own chunk exceeds the budget gets a group of its own (its steps are
    split into passes).
    """
    groups: list[list[int]] = []
    load = 0
    for i, shape in enumerate(sizes):
        m = chunk_size(math.prod(int(v) for v in shape), pixel_fraction)
        if groups and load + m <= pixel_budget:
            groups[-1].append(i)
            load += m
        else:
            groups.append([i])
            load = m
    return groups


def latent_start(fit: FitConfig, decoder: Decoder, field: FieldConfig) -> Optional[PatchInit]:
    """The map that starts the latents under ``fit.init`` ("patch": the decoder's; "uniform": None, the groups'
    own start). FieldInputError when "patch" has no map to use: a decoder pretrained on 1-D or 3-D samples, or
    before pretraining learned one, or a map read in another colour mode than ``field.colour``."""
    if fit.init == "uniform":
        return None
    start = decoder.latent_start
    if start is None:
        raise FieldInputError(
            "fit.init 'patch' starts the latents from the map the decoder learned at the end of its pretraining, and "
            "this decoder carries none (it decodes 1-D or 3-D samples, or was pretrained before arc learned the map): "
            "pretrain a decoder anew (delete its file) or set fit.init: uniform")
    if start.colour != field.colour:
        raise FieldInputError(f"the decoder's latent-start map reads patches in colour mode {start.colour!r}, the "
                              f"field has {field.colour!r}")
    return start


def cloud_settings(fit: FitConfig, decoder: Decoder, field: FieldConfig) -> dict:
    """The fit settings a cloud depends on, for store and cache keys: :meth:`FitConfig.result_settings`, and with
    ``fit.init: patch`` the hash of the decoder's map (``init_hash``, not covered by the decoder's own hash)."""
    settings = fit.result_settings()
    start = latent_start(fit, decoder, field)
    if start is not None:
        settings["init_hash"] = start.hash()
    return settings


def fit_clouds(
    images: Sequence[Tensor],
    decoder: Decoder,
    field: FieldConfig,
    fit: FitConfig,
    split: str,
    indices: Sequence[int],
    labels: Optional[Sequence[int]] = None,
    device: torch.device | str | None = None,
    progress: Optional[Progress] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> FitResult:
    """Fit one latent cloud per image [C, H, W] in [0, 1] against the frozen ``decoder``; in general per sample
    [C, *S] with D = len(S) = ``decoder.dims`` spatial axes.

    The latents start where ``fit.init`` says (:func:`latent_start`). Seeds come from (fit.seed, split,
    indices[i]); labels default to -1. ``progress(images_done,
    psnr_of_that_group)`` is called after every group, in order, and ``on_step(images_in_group)``
    after every optimisation step of a group (possibly from worker threads). Returns clouds in input order.
    On the CPU, groups are fitted concurrently, one per intra-op thread.
    """
    if len(images) != len(indices):
        raise FieldInputError(f"{len(images)} images but {len(indices)} source indices")
    if labels is not None and len(labels) != len(images):
        raise FieldInputError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise FieldInputError("fit_clouds needs at least one image")
    for im in images:
        if im.ndim != decoder.dims + 1 or im.shape[0] != decoder.channels:
            raise FieldInputError(f"a sample of shape {tuple(im.shape)} does not match a {decoder.channels}-channel "
                                  f"decoder of {decoder.dims}-D samples ([C, *S] with {decoder.dims} axes in S)")
    if (decoder.latent_dim, decoder.neighbours, decoder.offset_scale) != (field.latent_dim, field.neighbours, field.offset_mode):
        raise FieldInputError(
            f"decoder (z={decoder.latent_dim}, n={decoder.neighbours}, offsets {decoder.offset_scale}) does not "
            f"match the field (z={field.latent_dim}, n={field.neighbours}, offset_scale {field.offset_scale!r})"
        )
    start = latent_start(fit, decoder, field)
    device = _device(device)
    if next(decoder.parameters()).device != device:
        decoder = copy.deepcopy(decoder).to(device)  # the caller's decoder stays where it is

    def prepare(members: list[int]) -> FieldGroup:
        group = FieldGroup(
            [images[i] for i in members], field, split, [indices[i] for i in members],
            fit.seed, fit.pixel_fraction, fit.pixel_budget, device,
        )
        if start is not None:
            start.start(group, [images[i] for i in members])
        return group

    def run(group: FieldGroup, members: list[int]) -> tuple[CloudBatch, Tensor]:
        psnr = fit_group(group, decoder, fit, on_step)
        return group.clouds(labels=None if labels is None else [labels[i] for i in members]), psnr

    sizes = [tuple(im.shape[1:]) for im in images]  # the shapes S
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    budget = fit.pixel_budget
    if workers > 1:  # at least one group per worker (packing does not change the results)
        step_pixels = sum(chunk_size(math.prod(shape), fit.pixel_fraction) for shape in sizes)
        budget = min(budget, max(1, math.ceil(step_pixels / workers)))
    groups = pack_groups(sizes, fit.pixel_fraction, budget)
    workers = min(workers, len(groups))  # a single (large) group keeps the multi-threaded kernels
    clouds, psnrs, done = [], [], 0
    with ExitStack() as stack:
        if workers > 1:
            stack.enter_context(intra_op_threads(1))
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
            results = pool.map(lambda members: run(prepare(members), members), groups)
        elif device.type == "cuda":
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            results = _prefetched(pool, prepare, run, groups)
        else:
            results = (run(prepare(members), members) for members in groups)
        for members, (cloud, psnr) in zip(groups, results):
            clouds.append(cloud)
            psnrs.append(psnr)
            done += len(members)
            if progress is not None:
                progress(done, psnr)
    return FitResult(CloudBatch.concat(clouds), torch.cat(psnrs))


class _TF32Scopes:
    """The blocks that set the (process-global) CUDA TF32 flag: the first saves it, the last restores it."""

    lock = threading.Lock()
    active = 0
    saved = False


@contextmanager
def cuda_tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA float32 matmuls inside the block, then restore the previous setting.

    Blocks may overlap (shards fitted in threads) as long as they ask for the same setting.
    """
    with _TF32Scopes.lock:
        if _TF32Scopes.active == 0:
            _TF32Scopes.saved = torch.backends.cuda.matmul.allow_tf32
        elif torch.backends.cuda.matmul.allow_tf32 != enabled:
            raise RuntimeError("overlapping CUDA fits ask for different matmul precisions (fit.precision)")
        _TF32Scopes.active += 1
        torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        with _TF32Scopes.lock:
            _TF32Scopes.active -= 1
            if _TF32Scopes.active == 0:
                torch.backends.cuda.matmul.allow_tf32 = _TF32Scopes.saved


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous count (main thread only)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prefetched(pool: ThreadPoolExecutor, prepare, run, groups: list[list[int]]) -> Iterator[tuple[CloudBatch, Tensor]]:
    pending = pool.submit(prepare, groups[0])
    for g, members in enumerate(groups):
        group = pending.result()
        if g + 1 < len(groups):
            pending = pool.submit(prepare, groups[g + 1])
        yield run(group, members)

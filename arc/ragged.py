"""Ragged batches, the PTv3 ``offset`` layout: B clouds stored flat, cloud b in rows [starts[b], offset[b]).

The one home in arc for moving between per-cloud counts, cumulative offsets, start rows and
per-point cloud ids, and for sums over clouds. All index tensors are int64. Sums use
``index_add_``, which adds the rows of each segment in row order on the CPU, so results do not
depend on the thread count (torch_scatter is not needed). ``third_party/ptv3`` keeps its own
copies of the few it needs, since it imports nothing from arc.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["counts", "starts", "offsets", "batch_ids", "range_indices", "segment_sum"]


def counts(offset: Tensor) -> Tensor:
    """[B] cumulative offsets -> [B] number of rows of each cloud."""
    return torch.diff(offset, prepend=offset.new_zeros(1))


def starts(offset: Tensor) -> Tensor:
    """[B] cumulative offsets -> [B] first row of each cloud."""
    return offset - counts(offset)


def offsets(counts: Tensor) -> Tensor:
    """[B] rows per cloud -> [B] int64 cumulative offsets (end row of each cloud)."""
    return torch.cumsum(counts, 0)


def batch_ids(counts: Tensor, total: int | None = None) -> Tensor:
    """[B] rows per cloud -> [N] cloud number of every row; ``total`` = N saves a device sync when known."""
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts, output_size=total)


def range_indices(starts: Tensor, counts: Tensor) -> Tensor:
    """Concatenated aranges [starts[j], starts[j] + counts[j]) -> [sum(counts)] int64 row indices."""
    shifts = torch.repeat_interleave(starts - offsets(counts) + counts, counts)
    return shifts + torch.arange(int(counts.sum()), device=starts.device)


def segment_sum(values: Tensor, ids: Tensor, size: int) -> Tensor:
    """Sum of the rows of ``values`` [N, ...] per segment ``ids`` [N] in [0, size) -> [size, ...] (values' dtype)."""
    return values.new_zeros((size, *values.shape[1:])).index_add_(0, ids, values)

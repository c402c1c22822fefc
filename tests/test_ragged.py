"""arc.ragged: counts, offsets, starts and cloud ids of the flat layout, and sums over clouds."""
from __future__ import annotations

import torch

from arc import ragged


def test_counts_offsets_starts_and_ids_round_trip():
    counts = torch.tensor([3, 1, 0, 4])
    offset = ragged.offsets(counts)
    assert offset.tolist() == [3, 4, 4, 8] and offset.dtype == torch.int64
    assert torch.equal(ragged.counts(offset), counts)
    assert ragged.starts(offset).tolist() == [0, 3, 4, 4]
    ids = ragged.batch_ids(counts)
    assert ids.tolist() == [0, 0, 0, 1, 3, 3, 3, 3]
    assert torch.equal(ragged.batch_ids(counts, total=8), ids)


def test_range_indices_concatenate_the_ranges_in_the_given_order():
    assert ragged.range_indices(torch.tensor([5, 0, 2]), torch.tensor([2, 1, 3])).tolist() == [5, 6, 0, 2, 3, 4]
    assert ragged.range_indices(torch.tensor([4]), torch.tensor([0])).numel() == 0


def test_segment_sum_adds_rows_per_segment_and_keeps_empty_ones():
    values = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    ids = torch.tensor([0, 0, 2, 2, 2, 3])
    total = ragged.segment_sum(values, ids, 5)
    assert total.dtype == torch.float64 and total.shape == (5, 2)
    assert total.tolist() == [[2.0, 4.0], [0.0, 0.0], [18.0, 21.0], [10.0, 11.0], [0.0, 0.0]]
    assert ragged.segment_sum(torch.ones(6, dtype=torch.long), ids, 4).tolist() == [2, 0, 3, 1]

"""The clouds of a store as a torch ``Dataset``, and the collate function that joins them into one
:class:`~arc.cloud.CloudBatch` (positions in pixels, latents raw; see :mod:`arc.cloud`)."""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from arc import ragged
from arc.cloud import CloudBatch, CloudError
from arc.store import CloudStore, StoreError, as_store
from arc.store.integrity import verify_shard
from arc.store.layout import PER_CLOUD


class CloudDataset(Dataset):
    """Map-style dataset over the clouds of one recorded split of a store, in source-index order.

    ``dataset[i]`` is a one-cloud :class:`CloudBatch`. Every shard is checked against its checksum
    at construction (hashed once per process, :mod:`arc.store.integrity`). Per-cloud fields (labels, sizes, indices,
    colour transforms, PSNR) are loaded at construction; points are read lazily. Each process keeps
    an LRU of whole shards' points up to ``cache_bytes`` (a shard larger than that is read slice by
    slice instead), so memory stays bounded. ``__getitems__`` (used by DataLoader with a batch
    sampler) gathers a whole batch with vectorised indexing and returns it as a one-element list
    holding the collated batch, which :func:`collate_clouds` passes through.
    """

    def __init__(self, store: CloudStore | str | os.PathLike, split: str, cache_bytes: int = 1 << 30):
        self.store = as_store(store)
        if not self.store.has_split(split):
            raise StoreError(f"{self.store.path}: split {split!r} is not fitted yet (anchoring did not finish it); run anchoring again")
        self.split, self.cache_bytes = split, int(cache_bytes)
        per_cloud: dict[str, list[Tensor]] = {name: [] for name in PER_CLOUD}
        shard_of, starts, self._shard_bytes = [], [], {}
        for k in self.store.shard_numbers(split):
            verify_shard(self.store, split, k)  # once per shard and process; StoreError names a damaged file
            handle, _ = self.store.open_shard(split, k)
            if handle.get_slice("offset").get_shape()[0] == 0:  # every image of the shard was skipped
                continue
            for name in PER_CLOUD:
                per_cloud[name].append(handle.get_tensor(name))
            ends = per_cloud["offset"][-1]
            shard_of.append(torch.full_like(ends, k))
            starts.append(ragged.starts(ends))
            self._shard_bytes[k] = sum(4 * math.prod(handle.get_slice(name).get_shape()) for name in ("pos", "lat"))
        expected = self.store.counts.get(split)
        found = sum(int(ends.numel()) for ends in per_cloud["offset"])
        if expected is None or found != expected:
            raise StoreError(f"{self.store.path / split}: {found} clouds on disk, the manifest says {expected}; run "
                             f"anchoring again to refit missing shards and record the split (`arc store verify {self.store.path}`)")
        empty = {"size": torch.zeros(0, self.store.dims, dtype=torch.long), "psnr": torch.zeros(0), "colour_mean": torch.zeros(0, 0), "colour_std": torch.zeros(0, 0)}
        fields = {name: torch.cat(values) if values else empty.get(name, torch.zeros(0, dtype=torch.long)) for name, values in per_cloud.items()}
        self._shard = torch.cat(shard_of) if shard_of else torch.zeros(0, dtype=torch.long)
        self._start = torch.cat(starts) if starts else torch.zeros(0, dtype=torch.long)
        self._count = fields["offset"] - self._start
        self.labels: Tensor = fields["label"]
        self.sizes: Tensor = fields["size"]
        self.indices: Tensor = fields["index"]
        self.psnr: Tensor = fields["psnr"]
        self._colour_mean, self._colour_std = fields["colour_mean"], fields["colour_std"]
        self._cache: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._cached_bytes, self._pid = 0, os.getpid()

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def point_counts(self) -> Tensor:
        """[B] int64: the number of latents of each cloud."""
        return self._count

    def _points(self, k: int) -> tuple[Tensor, Tensor] | None:
        """(pos, lat) of shard k from the per-process cache, or None when the shard exceeds the budget."""
        if self._pid != os.getpid():
            self._cache, self._cached_bytes, self._pid = OrderedDict(), 0, os.getpid()
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        size = self._shard_bytes[k]
        if size > self.cache_bytes:
            return None
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            self._cached_bytes -= self._shard_bytes[self._cache.popitem(last=False)[0]]
        handle, _ = self.store.open_shard(self.split, k)
        self._cache[k] = (handle.get_tensor("pos"), handle.get_tensor("lat"))
        self._cached_bytes += size
        return self._cache[k]

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.split} has {len(self)} clouds, index {i} is out of range")
        return int(i) % len(self)

    def __getitem__(self, i: int) -> CloudBatch:
        i = self._check_index(i)
        k, start, end = int(self._shard[i]), int(self._start[i]), int(self._start[i] + self._count[i])
        points = self._points(k)
        if points is None:
            handle, _ = self.store.open_shard(self.split, k)
            pos, lat = handle.get_slice("pos")[start:end], handle.get_slice("lat")[start:end]
        else:
            pos, lat = points[0][start:end].clone(), points[1][start:end].clone()  # never hand out views of the cache
        return self._batch(torch.tensor([i]), pos, lat)

    def __getitems__(self, indices: Sequence[int]) -> list[CloudBatch]:
        """The clouds ``indices`` (in that order), gathered and collated: a list holding one batch."""
        ids = torch.tensor([self._check_index(i) for i in indices], dtype=torch.long)
        shards = self._shard[ids]
        order = torch.argsort(shards, stable=True)
        pos_parts, lat_parts = [], []
        for k in torch.unique_consecutive(shards[order]).tolist():
            members = ids[order[shards[order] == k]]
            points = self._points(k)
            if points is None:
                items = [self[int(i)] for i in members]
                pos_parts += [item.pos for item in items]
                lat_parts += [item.lat for item in items]
            else:
                rows = ragged.range_indices(self._start[members], self._count[members])
                pos_parts.append(points[0][rows])
                lat_parts.append(points[1][rows])
        grouped = self._batch(ids[order], torch.cat(pos_parts), torch.cat(lat_parts))
        return [grouped.select(torch.argsort(order))]

    def _batch(self, ids: Tensor, pos: Tensor, lat: Tensor) -> CloudBatch:
        return CloudBatch(
            pos=pos,
            lat=lat,
            offset=ragged.offsets(self._count[ids]),
            label=self.labels[ids],
            size=self.sizes[ids],
            index=self.indices[ids],
            colour_mean=self._colour_mean[ids],
            colour_std=self._colour_std[ids],
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"], state["_cached_bytes"] = OrderedDict(), 0
        return state


def collate_clouds(items: Sequence[CloudBatch]) -> CloudBatch:
    """Join single- or multi-cloud batches into one :class:`CloudBatch` (clouds keep their order).

    A one-element list is returned as is (what :meth:`CloudDataset.__getitems__` hands over).
    """
    if not items:
        raise CloudError("cannot collate an empty list of clouds")
    return items[0] if len(items) == 1 else CloudBatch.concat(items)

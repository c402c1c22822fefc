"""``arc store verify STORE [--repair]`` on a weight store (:mod:`arc.baselines.weight_store`).

Every shard of every recorded split is read whole and checked (header, tensors, checksum against its
header and the manifest's record, :func:`arc.store.integrity.verify_shard`), and each split's shards
must hold the sample count and skips the manifest records. ``--repair`` deletes the damaged shards and
un-records their splits, so the next run of a weight baseline refits exactly those shards (a run refits
a damaged shard anyway; repair makes the store consistent for direct readers). Exit status as the cloud
store's: 0 sound, 1 with problems (one line each), 2 when STORE is not a readable store.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from arc.baselines.weight_store import MANIFEST, WeightStore
from arc.files import write_json
from arc.store import StoreError


@dataclass
class WeightReport:
    """What :func:`verify_weight_store` found: shards read, problems (one line each), split -> damaged shards."""

    shards: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: dict[str, list[int]] = field(default_factory=dict)


def verify_weight_store(store: WeightStore) -> WeightReport:
    """Read and check every shard of every recorded split of ``store``."""
    report = WeightReport()
    for split in sorted(store.counts):
        recorded_skips = sorted(store.manifest["skipped"].get(split, []))
        count, skipped = 0, []
        for k in range(store.shards(split, store.counts[split] + len(recorded_skips))):
            report.shards += 1
            try:
                tensors, skips = store.read_shard(split, k)
            except StoreError as err:
                report.problems.append(str(err))
                report.damaged.setdefault(split, []).append(k)
                continue
            count, skipped = count + len(tensors["index"]), skipped + skips
        if split not in report.damaged and (count != store.counts[split] or sorted(skipped) != recorded_skips):
            report.problems.append(f"{store.path / split}: shards hold {count} samples and {len(skipped)} skips, the "
                                   f"manifest records {store.counts[split]} and {len(recorded_skips)}")
            report.damaged[split] = []
    return report


def repair_weight_store(store: WeightStore, report: WeightReport) -> list[str]:
    """Delete the damaged shards of ``report`` and un-record their splits; the lines that say what was done."""
    done = []
    for split, numbers in report.damaged.items():
        for k in numbers:
            if store.shard_path(split, k).exists():
                store.shard_path(split, k).unlink()
                done.append(f"removed {store.shard_path(split, k)}")
        done.append(f"un-recorded {split}: the next run of a weight baseline refits its missing shards and records it")
    results = ("counts", "skipped", "checksums", "fit_stats")
    manifest = {**store.manifest, **{name: {split: value for split, value in store.manifest.get(name, {}).items()
                                            if split not in report.damaged} for name in results}}
    write_json(store.path / MANIFEST, manifest)
    store.manifest = manifest
    return done


def verify_main(path: str, repair: bool, not_a_cloud_store: StoreError) -> int:
    """``arc store verify`` of the weight store at ``path`` (where ``not_a_cloud_store`` was raised opening it as a
    cloud store, the message when it is no weight store either): prints the problems; 0 sound, 1 problems, 2 unreadable."""
    try:
        store = WeightStore.open(path)
    except StoreError:
        print(f"arc store: {not_a_cloud_store}", file=sys.stderr)
        return 2
    try:
        report = verify_weight_store(store)
    except StoreError as err:
        print(f"arc store: {err}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem)
    print(f"{store.path}: weight store, {report.shards} shards checked, {len(report.problems)} problems")
    if repair and report.problems:
        for line in repair_weight_store(store, report):
            print(line)
    elif report.problems:
        print(f"run `arc store verify {store.path} --repair`, or a weight baseline on it, to refit what is damaged")
    return 1 if report.problems else 0

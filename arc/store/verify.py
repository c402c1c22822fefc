"""``arc store verify STORE [--repair]``: check every shard of a cloud store and its statistics (a weight
store of the baselines: :mod:`arc.baselines.weight_verify`).

Every shard file is read whole and checked (header, structure, checksum); each recorded split must
have all its shards, with the counts and skips the manifest records; the train statistics must
match the train latents; a "complete" store must have every split recorded. Exits 0 when all is
well, 1 when something is wrong (one line per problem), 2 when STORE is not a readable store.

``--repair`` deletes the damaged shards and un-records their splits (and the statistics, for
train), so the next anchoring run refits exactly those shards and records the split again; wrong
statistics of a sound train split are recomputed; shards written before checksums get their
current content hash recorded in the manifest (from then on they are verified like the others).
Do not run it while anchoring writes to the same store.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from arc.files import write_json
from arc.store.cloud_store import CloudStore, latent_statistics
from arc.store.integrity import recorded_checksum
from arc.store.layout import MANIFEST, StoreError, file_checksum

SPLITS = ("train", "val", "test")  # as arc.data.sources.SPLITS (the store does not import the data layer)


@dataclass
class Report:
    """What :func:`verify_store` found: problems (one line each), damaged shards and splits to re-record."""

    shards: int = 0
    unverified: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> shard -> content hash
    problems: list[str] = field(default_factory=list)
    damaged: dict[str, list[int]] = field(default_factory=dict)  # split -> shard numbers (missing or bad)
    unrecord: set[str] = field(default_factory=set)
    not_complete: bool = False  # marked complete without every split recorded
    statistics: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # recomputed, when the recorded ones are wrong

    def bad(self, split: str, k: Optional[int], problem: str) -> None:
        self.problems.append(problem)
        if k is not None:
            self.damaged.setdefault(split, []).append(k)
        self.unrecord.add(split)


def _split_names(store: CloudStore) -> list[str]:
    found = {path.name for path in store.path.iterdir() if path.is_dir() and store.shard_numbers(path.name)}
    return sorted(found | set(store.counts))


def _check_split(store: CloudStore, split: str, report: Report) -> None:
    numbers = store.shard_numbers(split)
    for k in numbers:
        report.shards += 1
        try:
            store.read_shard(split, k)  # header, structure and checksum; StoreError names the file
        except StoreError as err:
            report.bad(split, k, str(err))
            continue
        if store.open_shard(split, k)[1].get("checksum") is None and recorded_checksum(store, split, k) is None:
            report.unverified.setdefault(split, {})[str(k)] = file_checksum(store.open_shard(split, k)[0])
    if not store.has_split(split):
        return
    expected = list(range(store.num_shards(split)))
    for k in sorted(set(expected) - set(numbers)):
        report.bad(split, k, f"{store.shard_path(split, k)}: shard missing from the recorded split {split}")
    if numbers != expected or split in report.damaged:
        if set(numbers) - set(expected):
            report.bad(split, None, f"{store.path / split}: shards {sorted(set(numbers) - set(expected))} beyond the recorded count")
        return
    count, skipped = store.collect(split)
    if count != store.counts[split] or skipped != sorted(store.skipped.get(split, [])):
        report.bad(split, None, f"{store.path / split}: shards hold {count} clouds and {len(skipped)} skips, the manifest "
                                f"records {store.counts[split]} and {len(store.skipped.get(split, []))}")


def _check_statistics(store: CloudStore, report: Report) -> None:
    if store.is_complete and not all(store.has_split(split) for split in SPLITS):
        report.problems.append(f"{store.path}: marked complete, but only {sorted(store.counts)} are recorded")
        report.not_complete = True
    if not store.has_split("train") or "train" in report.unrecord:
        return
    if not store.has_statistics:
        report.problems.append(f"{store.path}: train is recorded without its latent statistics")
    else:
        mean, std = latent_statistics(store, "train")
        if torch.allclose(mean, store.latent_mean, rtol=1e-4, atol=1e-6) and torch.allclose(std, store.latent_std, rtol=1e-4, atol=1e-6):
            return
        report.problems.append(f"{store.path / MANIFEST}: the recorded train latent mean/std are not those of the train shards")
    report.statistics = latent_statistics(store, "train")


def verify_store(store: CloudStore) -> Report:
    """Check every shard, the recorded splits and the train statistics of ``store`` (reads it whole)."""
    report = Report()
    for split in _split_names(store):
        _check_split(store, split, report)
    _check_statistics(store, report)
    return report


def repair_store(store: CloudStore, report: Report) -> list[str]:
    """Delete the damaged shards of ``report``, un-record their splits, fix the statistics and record the
    checksums of shards written before checksums; the lines that say what was done."""
    done, manifest = [], dict(store.manifest)
    for split, numbers in report.damaged.items():
        for k in numbers:
            path = store.shard_path(split, k)
            if path.exists():
                path.unlink()
                done.append(f"removed {path}")
    checksums = {split: dict(values) for split, values in (manifest.get("checksums") or {}).items()}
    for split in report.unrecord:
        for name in ("counts", "skipped"):
            manifest[name] = {key: value for key, value in manifest.get(name, {}).items() if key != split}
        checksums.pop(split, None)
        if split == "train":
            manifest.update(latent_mean=None, latent_std=None)
        manifest["status"] = "incomplete"
        done.append(f"un-recorded {split}: the next anchoring run refits its missing shards and records it")
    if report.not_complete:
        manifest["status"] = "incomplete"
        done.append("marked the store incomplete: the next anchoring run fits and records the missing splits")
    for split, values in report.unverified.items():
        checksums.setdefault(split, {}).update(values)
        done.append(f"recorded the checksums of {len(values)} {split} shards written before checksums")
    if report.statistics is not None and "train" not in report.unrecord:
        manifest.update(latent_mean=report.statistics[0].double().tolist(), latent_std=report.statistics[1].double().tolist())
        done.append("recorded the train latent statistics computed from its shards")
    manifest["checksums"] = checksums
    write_json(store.path / MANIFEST, manifest)
    store.manifest = manifest
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``arc store verify STORE [--repair]``: 0 when the store verifies, 1 with problems, 2 when unreadable."""
    parser = argparse.ArgumentParser(prog="arc store", description="Check (and repair) a cloud store.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check every shard (checksums, counts) and the train statistics")
    verify.add_argument("store", help="the store directory (the one holding manifest.json)")
    verify.add_argument("--repair", action="store_true",
                        help="delete damaged shards and un-record their splits, so the next anchoring run refits them")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        store = CloudStore.open(args.store)
    except StoreError as err:  # perhaps a weight store of the baselines (imported here only: arc.store stays below them)
        from arc.baselines.weight_verify import verify_main

        return verify_main(args.store, args.repair, err)
    try:
        report = verify_store(store)
    except StoreError as err:
        print(f"arc store: {err}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem)
    unverified = sum(len(values) for values in report.unverified.values())
    print(f"{store.path}: {report.shards} shards checked, {len(report.problems)} problems"
          + (f", {unverified} shards without a checksum (written before checksums; --repair records them)" if unverified else ""))
    if args.repair and (report.problems or unverified):
        for line in repair_store(store, report):
            print(line)
    elif report.problems:
        print(f"run `arc store verify {store.path} --repair`, then anchoring again, to refit what is damaged")
    return 1 if report.problems else 0

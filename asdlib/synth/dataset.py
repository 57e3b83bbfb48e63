"""A synthetic dataset folder: its info file, its lock, and the entry points that write
(`generate_dataset`), complete or check it (`ensure_dataset`, `missing_clips`)."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from asdlib import atomic, locking
import asdlib.synth.files as files
from asdlib.synth.plan import (DATASET_DIRS, DEFAULT_YEAR, EVAL_MACHINES, SPLITS, YEARS, Preset,
                               clip_plan, resolve_preset, resolve_variant, resolve_year,
                               select_machines)

#: Bump when the rendered audio changes: a folder made by another version is regenerated.
#: (1 was an in-progress draft of this generator.)
GENERATOR_VERSION = 2
INFO_FILE = "synth_info.json"
LOCK_FILE = ".synth.lock"
#: Key of the info file listing the finished machines of each dataset.
COMPLETE_KEYS = {"dev": "machines_complete", "eval": "eval_machines_complete"}


class SynthError(RuntimeError):
    """The synthetic dataset folder cannot be used as asked (e.g. made with other settings)."""


def _info(p: Preset, seed: int, variant: str = "default", year: int = DEFAULT_YEAR) -> dict:
    info = {"generator": "asdlib.synth", "generator_version": GENERATOR_VERSION,
            "seed": int(seed), "preset": asdict(p)}
    if variant != "default":  # the default's info is as before variants existed
        info["variant"] = asdict(resolve_variant(variant))
    if year != DEFAULT_YEAR:  # ... and as before year sets existed
        info["year"] = int(year)
        info["channels"] = resolve_year(year).channels
    return info


def _read_info(root: Path) -> dict | None:
    path = root / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SynthError(f"{path}: unreadable ({exc}); delete it to regenerate") from exc


def _write_info(root: Path, info: dict) -> None:
    atomic.write_text(root / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))


def _check_info(root: Path, p: Preset, seed: int, clear_old: bool = False,
                variant: str = "default", year: int = DEFAULT_YEAR) -> dict:
    """The info to continue with: the existing one, or a fresh one for an empty folder.

    Raises SynthError when the folder holds a dataset of another seed, preset, variant or
    year (clips of two datasets must never mix). A folder made by another generator
    version is returned as is, or, with ``clear_old``, emptied of the files this generator
    writes and started afresh.
    """
    existing = _read_info(root)
    wanted = json.loads(json.dumps(_info(p, seed, variant, year)))  # as read back: lists
    # for tuples, so that a variant's ranges compare equal to those written
    wanted["machines_complete"] = []
    if existing is None:
        return wanted
    for key in ("seed", "preset", "variant", "year"):
        if existing.get(key) != wanted.get(key):
            had, asked = (existing.get(key, DEFAULT_YEAR), wanted.get(key, DEFAULT_YEAR)) \
                if key == "year" else (existing.get(key), wanted.get(key))
            raise SynthError(f"{root}: holds a synthetic dataset with {key}={had!r}, "
                             f"asked for {asked!r}; use another root or delete this one")
    if existing.get("generator_version") != GENERATOR_VERSION:
        if not clear_old:
            return existing
        if existing.get("generator") != "asdlib.synth":
            raise SynthError(f"{root / INFO_FILE}: not written by asdlib.synth; delete the "
                             "folder or use another root")
        print(f"[synth] {root}: made by generator version {existing.get('generator_version')}, "
              f"regenerating with version {GENERATOR_VERSION}", file=sys.stderr, flush=True)
        _clear_generated(root)
        return wanted
    existing.setdefault("machines_complete", [])
    return existing


def _clear_generated(root: Path) -> None:
    """Delete what this generator writes (clips, temporary files, per-machine csv files,
    evaluation ground truth) for every machine name it knows."""
    folders = {("dev", m) for ys in YEARS.values() for m in ys.dev_machines}
    folders |= {("eval", m) for m in EVAL_MACHINES}
    for dataset, machine in sorted(folders):
        machine_dir = root / DATASET_DIRS[dataset] / "raw" / machine
        for split in SPLITS:
            folder = machine_dir / split
            if folder.is_dir():
                for path in list(folder.glob("*.wav")) + list(folder.glob(".*.tmp")):
                    path.unlink()
        for name in files.machine_file_names("dev"):
            (machine_dir / name).unlink(missing_ok=True)
        if dataset == "eval":
            for path in files.ground_truth_paths(root, machine):
                path.unlink(missing_ok=True)
    (root / INFO_FILE).unlink(missing_ok=True)


def _remove_stale_tmp(folder: Path) -> None:
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def generate_dataset(root: str | os.PathLike, preset: str | Preset = "demo", seed: int = 0,
                     machines=None, progress: bool = True, workers: int | None = None,
                     variant: str = "default", datasets=("dev",),
                     year: int = DEFAULT_YEAR) -> Path:
    """Write (or complete) the synthetic dataset under ``root``; returns ``root`` as a Path.

    preset: name in ``PRESETS`` or a ``Preset``; seed: non-negative int; machines: names
    among the machines of ``datasets`` (None = all of them); workers: processes rendering
    in parallel (the output does not depend on it; None = one per CPU, at most 4, when over
    50 clips are missing); variant: a name in ``VARIANTS`` (held-out fault settings;
    "default" is the embedded data); datasets: ``("dev",)`` (the default, the embedded
    data) or ``("dev", "eval")`` to add the evaluation split (``EVAL_MACHINES`` under
    ``eval_data/raw``, unlabelled test names, ground truth under ``eval_ground_truth``);
    year: 2026 (stereo, the default) or a mono year set of ``YEARS`` (e.g. 2025: the DCASE
    2025 development names, near channel only; dev only).
    Existing complete clips are kept (a clip's bytes depend only on its seed), stale
    temporary files of an interrupted run are removed. Raises SynthError
    when ``root`` holds a dataset made with another seed, preset, variant or year, and
    `asdlib.locking.LockHeld` while another process generates into ``root``
    (``.synth.lock``); a dataset of another generator version is deleted and regenerated.
    """
    root = Path(root).expanduser()
    p = resolve_preset(preset)
    resolve_variant(variant)
    year = resolve_year(year).year
    selection = select_machines(machines, datasets, year)
    root.mkdir(parents=True, exist_ok=True)
    with locking.FolderLock(root / LOCK_FILE, f"the synthetic dataset {root}"):
        _generate(root, p, seed, selection, progress, workers, variant, year)
    return root


def _generate(root: Path, p: Preset, seed: int, selection: dict[str, list[str]],
              progress: bool, workers: int | None, variant: str, year: int) -> None:
    info = _check_info(root, p, seed, clear_old=True, variant=variant, year=year)
    _write_info(root, info)
    channels = resolve_year(year).channels
    start_all = time.perf_counter()
    if workers is None:
        n_missing = sum(len(_missing(root, p, d, names, year)) for d, names in selection.items())
        workers = min(4, os.cpu_count() or 1) if n_missing > 50 else 1
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for dataset, names in selection.items():
            raw_dir = root / DATASET_DIRS[dataset] / "raw"
            for machine in names:
                start = time.perf_counter()
                plan = clip_plan(p, [machine], dataset, year)
                for split in SPLITS:
                    (raw_dir / machine / split).mkdir(parents=True, exist_ok=True)
                    _remove_stale_tmp(raw_dir / machine / split)
                todo = [s for s in plan
                        if not files.is_complete(root / s.root_relpath, p, channels)]
                if pool is None:
                    for spec in todo:
                        files.write_clip(root, spec, p, seed, variant, channels)
                else:
                    chunks = [todo[i::workers * 4] for i in range(workers * 4)]
                    list(pool.map(files.write_clips, [(root, c, p, seed, variant, channels)
                                                      for c in chunks if c]))
                files.machine_files(raw_dir, machine, plan, dataset)
                if dataset == "eval":
                    files.write_ground_truth(root, machine, plan)
                key = COMPLETE_KEYS[dataset]
                if machine not in info.get(key, []):
                    info[key] = sorted(set(info.get(key, [])) | {machine})
                    _write_info(root, info)
                if progress:
                    label = machine if dataset == "dev" else f"{dataset} {machine}"
                    print(f"[synth] {label}: {len(plan)} clips ({len(todo)} rendered) in "
                          f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if progress:
        print(f"[synth] {root}: done in {time.perf_counter() - start_all:.1f} s",
              file=sys.stderr, flush=True)


def _missing(root: Path, p: Preset, dataset: str, names: list[str], year: int) -> list[str]:
    """Missing files of ``names`` in ``dataset``: dev ones relative to ``dev_data/raw`` (as
    always), eval ones relative to the root."""
    channels = resolve_year(year).channels
    raw = Path(DATASET_DIRS[dataset]) / "raw"
    prefix = "" if dataset == "dev" else f"{raw.as_posix()}/"
    missing = [prefix + s.relpath for s in clip_plan(p, names, dataset, year)
               if not files.is_complete(root / s.root_relpath, p, channels)]
    for machine in names:
        for name in files.machine_file_names(dataset):
            if not (root / raw / machine / name).is_file():
                missing.append(f"{prefix}{machine}/{name}")
        if dataset == "eval":
            missing += [path.relative_to(root).as_posix()
                        for path in files.ground_truth_paths(root, machine) if not path.is_file()]
    return missing


def missing_clips(root: str | os.PathLike, preset: str | Preset = "demo", machines=None,
                  datasets=("dev",), year: int = DEFAULT_YEAR) -> list[str]:
    """Planned files that are absent or of the wrong size, plus the per-machine csv files:
    development files as paths under ``dev_data/raw``, evaluation files (clips, csv files,
    ground truth) as paths under the root (``eval_data/raw/...``,
    ``eval_ground_truth/...``)."""
    root = Path(root)
    p = resolve_preset(preset)
    year = resolve_year(year).year
    selection = select_machines(machines, datasets, year)
    return [m for d, names in selection.items() for m in _missing(root, p, d, names, year)]


def ensure_dataset(root: str | os.PathLike, preset: str | Preset = "demo", seed: int = 0,
                   manifest: str | os.PathLike | None = None, machines=None,
                   progress: bool = True, workers: int | None = None, hashes=None,
                   variant: str = "default", datasets=("dev",),
                   year: int = DEFAULT_YEAR) -> Path:
    """Return ``root`` holding the complete synthetic dataset, generating what is missing.

    A complete folder made with the same (preset, seed, variant, year, generator version)
    is returned as is (a cheap size check of every planned file, no hashing); a folder
    with the development split only gains the evaluation split when ``datasets`` asks for
    it. A folder made by an older generator version is regenerated; one made with another
    seed, preset, variant or year raises SynthError. datasets, year: as in
    `generate_dataset`.

    manifest: a manifest csv (`asdlib.data.write_manifest`) the finished files must match,
        byte for byte (sha256): `asdlib.data.ManifestMismatch` names every differing file.
        The embedded default is checked against the committed ``data_manifest.csv`` so that a
        generator change that alters the data cannot pass unseen. hashes: as in
        `asdlib.data.build_manifest` (a cache makes the check cheap to repeat).
    """
    root = _ensure(root, preset, seed, machines, progress, workers, variant, datasets, year)
    if manifest is not None:
        from asdlib import data

        data.verify_manifest(root, manifest, hashes=hashes)
    return root


def _ensure(root, preset, seed, machines, progress, workers, variant, datasets, year) -> Path:
    root = Path(root).expanduser()
    p = resolve_preset(preset)
    year = resolve_year(year).year
    selection = select_machines(machines, datasets, year)
    info = _read_info(root) if root.is_dir() else None
    if info is not None:
        info = _check_info(root, p, seed, variant=variant, year=year)
        if info.get("generator_version") == GENERATOR_VERSION and \
                all(set(names) <= set(info.get(COMPLETE_KEYS[d], []))
                    for d, names in selection.items()) and \
                not missing_clips(root, p, machines, datasets, year):
            return root
    return generate_dataset(root, p, seed, machines, progress=progress, workers=workers,
                            variant=variant, datasets=datasets, year=year)

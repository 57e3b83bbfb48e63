"""Official DCASE Task 2 archives (2026, and 2023-2025): resumable download, zip check,
extraction.

The archives live on Zenodo (SPEC section 1):

- development data, record 19336329: ``dev_<machine>.zip`` (ToyCar was replaced by
  ``dev_ToyCar_r2.zip``);
- additional training data of the evaluation machines, record 20151556:
  ``eval_data_<machine>_train.zip``;
- evaluation test data, record 20437238: ``eval_data_<machine>_test.zip``. This file name
  follows the pattern of the earlier years (2023-2025); it is not confirmed for 2026.

Everything is extracted into the official layout ``<root>/dev_data/raw/<machine>/...``
and ``<root>/eval_data/raw/<machine>/...``, whatever folder the archive wraps its files
in. Archives are downloaded to ``<root>/archives/`` through a ``.part`` file that is
resumed with an HTTP Range request; an archive placed there by hand is used as is, so the
data can be installed without network. Only the standard library (urllib) is used, plus
tqdm for the progress bar.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, NamedTuple, Sequence

#: Development machines of DCASE 2026 Task 2.
DEV_MACHINES = ("bearingEmu", "fan", "gearboxEmu", "sliderEmu", "ToyCar", "ToyCarEmu",
                "valveEmu")
#: Evaluation machines of DCASE 2026 Task 2.
EVAL_MACHINES = ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander")

ZENODO_DEV = "https://zenodo.org/records/19336329/files"
ZENODO_EVAL_TRAIN = "https://zenodo.org/records/20151556/files"
ZENODO_EVAL_TEST = "https://zenodo.org/records/20437238/files"


class Year(NamedTuple):
    """One year of DCASE Task 2: per split (machines, Zenodo folder, archive-name pattern,
    dataset folder, sub-folders it adds), archive names that differ from the pattern, and
    whether its clips are stereo (near, far: 2026) or mono (2023-2025)."""
    splits: dict
    renamed: dict
    stereo: bool


def _year(dev, eval_machines, dev_url, train_url, test_url, renamed=None, stereo=False,
          test_machines=None) -> Year:
    return Year({
        "dev": (dev, dev_url, "dev_{machine}.zip", "dev_data", ("train", "test")),
        "eval_train": (eval_machines, train_url, "eval_data_{machine}_train.zip",
                       "eval_data", ("train",)),
        "eval_test": (test_machines or eval_machines, test_url, "eval_data_{machine}_test.zip",
                      "eval_data", ("test",)),
    }, renamed or {}, stereo)


#: The official archives of each year (the DCASE baseline's download scripts list the same
#: records). 2026's evaluation test record follows the earlier years' file pattern; it is
#: not confirmed. 2024's RoboticArm test archive is not in the baseline's list.
YEARS: dict[int, Year] = {
    2023: _year(("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"),
                ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"),
                "https://zenodo.org/records/7882613/files",
                "https://zenodo.org/records/7830345/files",
                "https://zenodo.org/records/7860847/files"),
    2024: _year(("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"),
                ("3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone",
                 "HairDryer", "ToothBrush", "RoboticArm", "BrushlessMotor"),
                "https://zenodo.org/records/10902294/files",
                "https://zenodo.org/records/11259435/files",
                "https://zenodo.org/records/11363076/files",
                renamed={("eval_train", "3DPrinter"): "eval_data_3DPrinter_train_r2.zip",
                         ("eval_train", "RoboticArm"): "eval_data_RoboticArm_train_r2.zip"},
                test_machines=("3DPrinter", "AirCompressor", "Scanner", "ToyCircuit",
                               "HoveringDrone", "HairDryer", "ToothBrush", "BrushlessMotor")),
    2025: _year(("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"),
                ("ToyRCCar", "ToyPet", "HomeCamera", "AutoTrash", "Polisher", "ScrewFeeder",
                 "BandSealer", "CoffeeGrinder"),
                "https://zenodo.org/records/15097779/files",
                "https://zenodo.org/records/15392814/files",
                "https://zenodo.org/records/15519362/files"),
    2026: _year(DEV_MACHINES, EVAL_MACHINES, ZENODO_DEV, ZENODO_EVAL_TRAIN, ZENODO_EVAL_TEST,
                renamed={("dev", "ToyCar"): "dev_ToyCar_r2.zip"}, stereo=True),
}
#: The current year (its archives are the default everywhere).
YEAR = 2026
#: 2026's splits and renamed archives (the default of `official_archives`).
SPLITS = YEARS[YEAR].splits
RENAMED = YEARS[YEAR].renamed

ARCHIVE_DIR = "archives"
#: Pause before resuming a broken transfer, times the attempt number (seconds).
RETRY_PAUSE_S = 2.0
_CHUNK = 1 << 16
_JUNK = ("__MACOSX", ".DS_Store")


class Archive(NamedTuple):
    """One official archive: file name, URL and the folder (relative to the data root)
    that receives its machine folder's content."""
    name: str
    url: str
    dest_subdir: str
    machine: str = ""
    split: str = ""


class ArchiveResult(NamedTuple):
    """What :func:`download_archives` did with one archive."""
    archive: Archive
    path: Path          # the machine folder in the official layout
    status: str         # "extracted" | "skipped" (already there)


class DownloadError(RuntimeError):
    """A download that failed (offline, server error, incomplete transfer)."""


class ArchiveError(RuntimeError):
    """A corrupt archive or one whose layout cannot be placed in the official layout."""


# --------------------------------------------------------------------------- catalogue

def _canonical_machine(name: str, splits: dict) -> str | None:
    """Exact machine name for a case-insensitive spelling, or None."""
    by_lower = {m.lower(): m for machines, *_ in splits.values() for m in machines}
    return by_lower.get(str(name).lower())


def official_archives(machines: Iterable[str] | None = None,
                      splits: Sequence[str] = ("dev",), year: int = YEAR) -> list[Archive]:
    """The official archives of ``machines`` (all of each split by default) and ``splits``
    of DCASE Task 2 ``year`` (`YEARS`: 2023-2026).

    Splits: "dev" (development data), "eval_train" (additional training data of the
    evaluation machines), "eval_test" (evaluation test data). A machine is matched to the
    requested splits it belongs to; a machine in none of them, an unknown machine, split or
    year raises ``ValueError`` listing the valid names.
    """
    if year not in YEARS:
        raise ValueError(f"unknown year {year}; years: {sorted(YEARS)}")
    catalogue, renamed = YEARS[year].splits, YEARS[year].renamed
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [s for s in splits if s not in catalogue]
    if unknown or not splits:
        raise ValueError(f"unknown split(s) {unknown}; valid splits: {list(catalogue)}")
    if machines is None:
        wanted = list(dict.fromkeys(m for s in splits for m in catalogue[s][0]))
    else:
        if isinstance(machines, str):
            machines = [machines]
        wanted = []
        for m in machines:
            canon = _canonical_machine(m, catalogue)
            if canon is None:
                raise ValueError(f"unknown machine {m!r} in {year}; dev machines: "
                                 f"{list(catalogue['dev'][0])}; eval machines: "
                                 f"{list(catalogue['eval_train'][0])}")
            if not any(canon in catalogue[s][0] for s in splits):
                valid = sorted({x for s in splits for x in catalogue[s][0]})
                raise ValueError(f"machine {canon!r} is in none of the splits {list(splits)}; "
                                 f"machines of these splits: {valid}")
            wanted.append(canon)
        wanted = list(dict.fromkeys(wanted))
    out = []
    for split in splits:
        split_machines, base, pattern, dataset, _ = catalogue[split]
        for machine in wanted:
            if machine not in split_machines:
                continue
            name = renamed.get((split, machine), pattern.format(machine=machine))
            out.append(Archive(name=name, url=f"{base}/{name}",
                               dest_subdir=f"{dataset}/raw/{machine}",
                               machine=machine, split=split))
    return out


# --------------------------------------------------------------------------- download

def _manual_hint(archive: Archive, root: Path) -> str:
    return (f"To install it by hand, download {archive.url} on a machine with internet "
            f"access and place it as {root / ARCHIVE_DIR / archive.name}; rerunning "
            "download_archives then checks and extracts it without network.")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(start, total) from a ``Content-Range: bytes start-end/total`` header."""
    if not header or not header.startswith("bytes"):
        return None, None
    spec = header.split(None, 1)[-1]
    rng, _, total = spec.partition("/")
    start = rng.split("-")[0]
    return (int(start) if start.strip().isdigit() else None,
            int(total) if total.strip().isdigit() else None)


def _fetch(url: str, part: Path, progress: bool, timeout: float, label: str) -> None:
    """Download ``url`` into ``part``, resuming from its current size when it exists.

    A server that ignores the Range request (status 200) restarts the file from zero.
    Raises ``urllib.error.URLError``/``OSError`` on network errors (the caller explains),
    and :class:`DownloadError` when the transfer ends short.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "asdlib-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:   # nothing left to fetch, or a stale part
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == have:
                return
            part.unlink()
            return _fetch(url, part, progress, timeout, label)
        raise
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(f"{url}: server resumed at byte {start}, asked {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"         # fresh download, or the server ignored Range
            total = length
        if total is None and length is not None:
            total = have + length
        if total is not None:
            free = shutil.disk_usage(part.parent).free
            if total - have > free:
                raise DownloadError(f"not enough disk space for {label}: need "
                                    f"{(total - have) / 1e9:.2f} GB, free {free / 1e9:.2f} GB "
                                    f"in {part.parent}")
        from tqdm.auto import tqdm
        with open(part, mode) as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=label,
                                          disable=not progress) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: transfer ended at {size} of {total} bytes; the partial "
                            f"file {part} is kept and a rerun resumes it")


def _download(archive: Archive, url: str, root: Path, progress: bool, timeout: float,
              retries: int) -> Path:
    """The archive's zip under ``<root>/archives`` (downloaded unless already there)."""
    return fetch_file(url, root / ARCHIVE_DIR / archive.name, _manual_hint(archive, root),
                      progress, timeout, retries)


def fetch_file(url: str, target: Path, hint: str = "", progress: bool = True,
               timeout: float = 60.0, retries: int = 3) -> Path:
    """``target`` downloaded from ``url`` unless it is already there: through
    ``<target>.part``, resumed with HTTP Range, a broken stream resumed up to ``retries``
    times. Failures raise DownloadError with the reason and ``hint`` (what to do offline)."""
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    attempt = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch(url, part, progress, timeout, target.name)
            break
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url} failed: HTTP {exc.code} {exc.reason}. {hint}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException,
                DownloadError) as exc:
            reason = getattr(exc, "reason", exc)
            progressed = part.exists() and part.stat().st_size > before
            if progressed and attempt < retries:   # the stream broke mid-way: resume
                attempt += 1
                time.sleep(RETRY_PAUSE_S * attempt)
                continue
            if isinstance(exc, DownloadError):
                raise
            partial = (f" {part.stat().st_size} bytes are kept in {part}; a rerun resumes."
                       if part.exists() and part.stat().st_size else "")
            raise DownloadError(
                f"could not download {url}: {reason}. You seem to be offline, or the server "
                f"is unreachable.{partial} {hint}") from None
    os.replace(part, target)
    return target


# --------------------------------------------------------------------------- extraction

def _member_parts(name: str) -> tuple[str, ...] | None:
    """Safe path components of a zip member, None for junk; rejects absolute/.. paths."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise ArchiveError(f"unsafe member path in archive: {name!r}")
    if any(part in _JUNK or part.startswith("._") for part in p.parts):
        return None
    return p.parts


def plan_extraction(members: Iterable[str], machine: str = "") -> dict[str, str]:
    """Map zip member names to paths relative to the machine folder.

    The machine folder is recognised as the folder that holds ``train/`` or ``test/``,
    however deep the archive nests it (``fan/``, ``dev_data/raw/fan/``, ``ToyCar_r2/``
    or nothing); files outside it go to the machine folder under their base name.
    Raises :class:`ArchiveError` if no such folder exists or several do.
    """
    files = []
    for name in members:
        if name.endswith("/"):
            continue
        parts = _member_parts(name)
        if parts:
            files.append((name, parts))
    prefixes = set()
    for _, parts in files:
        for i, part in enumerate(parts[:-1]):
            if part in ("train", "test"):
                prefixes.add(parts[:i])
                break
    if not prefixes:
        raise ArchiveError(f"archive of {machine or 'a machine'} has no train/ or test/ "
                           f"folder; cannot place it in the official layout")
    if len(prefixes) > 1:
        shown = sorted("/".join(p) or "." for p in prefixes)
        raise ArchiveError(f"archive holds several machine folders {shown}; expected one")
    prefix = prefixes.pop()
    plan = {}
    for name, parts in files:
        if parts[:len(prefix)] == prefix:
            rel = "/".join(parts[len(prefix):])
        else:
            rel = parts[-1]
        if rel in plan.values():
            raise ArchiveError(f"two archive members land on {rel!r}")
        plan[name] = rel
    return plan


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` into ``dst``: rename when ``dst`` is absent, else merge child by child."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
    elif src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def check_zip(path: Path) -> None:
    """Raise :class:`ArchiveError` unless ``path`` is a readable zip with intact CRCs."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"{path} is not a valid zip archive ({exc})") from None
    if bad is not None:
        raise ArchiveError(f"{path} is corrupt: member {bad!r} fails its CRC check")


def _extract(zip_path: Path, archive: Archive, root: Path) -> Path:
    """Extract into ``<root>/<dest_subdir>`` through a staging folder; returns the folder."""
    dest = root / archive.dest_subdir
    staging = root / ARCHIVE_DIR / f".staging-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)
    with zipfile.ZipFile(zip_path) as zf:
        plan = plan_extraction(zf.namelist(), archive.machine)
        for member, rel in plan.items():
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    dest.mkdir(parents=True, exist_ok=True)
    for child in sorted(staging.iterdir()):
        _merge_move(child, dest / child.name)
    staging.rmdir()
    return dest


def _marker(root: Path, archive: Archive) -> Path:
    return root / ARCHIVE_DIR / f"{archive.name}.extracted"


def is_extracted(root, archive: Archive) -> bool:
    """True when the archive was extracted here, by us (marker) or by hand (folders present)."""
    root = Path(root)
    if _marker(root, archive).is_file():
        return True
    dest = root / archive.dest_subdir
    expected = {"eval_train": ("train",), "eval_test": ("test",)}.get(archive.split,
                                                                    ("train", "test"))
    return all((dest / sub).is_dir() and any((dest / sub).iterdir()) for sub in expected)


def download_archives(root, machines: Iterable[str] | None = None,
                      splits: Sequence[str] = ("dev",), base_url: str | None = None,
                      progress: bool = True, keep_archives: bool = True,
                      timeout: float = 60.0, retries: int = 3,
                      year: int = YEAR) -> list[ArchiveResult]:
    """Download, check and extract official archives into the official layout under ``root``.

    Archives already extracted are skipped without network. Downloads go through
    ``<root>/archives/<name>.part`` and resume with HTTP Range (restarting cleanly when
    the server ignores it); a broken stream is resumed up to ``retries`` times. Each zip
    is verified with ``testzip`` before anything is extracted; a corrupt one is renamed
    ``<name>.corrupt`` and reported. ``base_url`` replaces the Zenodo folders (mirrors,
    tests): archive ``<name>`` is then fetched from ``<base_url>/<name>``.
    ``keep_archives=False`` deletes each zip after its extraction.
    """
    root = Path(root)
    results = []
    for archive in official_archives(machines, splits, year):
        dest = root / archive.dest_subdir
        if is_extracted(root, archive):
            results.append(ArchiveResult(archive, dest, "skipped"))
            continue
        url = f"{base_url.rstrip('/')}/{archive.name}" if base_url else archive.url
        zip_path = _download(archive, url, root, progress, timeout, retries)
        try:
            check_zip(zip_path)
        except ArchiveError as exc:
            corrupt = zip_path.with_name(zip_path.name + ".corrupt")
            os.replace(zip_path, corrupt)
            raise ArchiveError(f"{exc}. Nothing was extracted; the file was moved to "
                               f"{corrupt}, so a rerun downloads it again. "
                               + _manual_hint(archive, root)) from None
        _extract(zip_path, archive, root)
        _marker(root, archive).write_text(json.dumps(
            {"archive": archive.name, "url": url, "dest": archive.dest_subdir,
             "bytes": zip_path.stat().st_size}) + "\n")
        if not keep_archives:
            zip_path.unlink()
        results.append(ArchiveResult(archive, dest, "extracted"))
    return results

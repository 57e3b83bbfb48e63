"""DCASE Task 2 (2023-2026) dataset layout: clip names, clip tables, validation, manifest.

Layout (see docs/ARCHITECTURE.md and SPEC section 1)::

    <root>/dev_data/raw/<machine>/{train,test}/*.wav
    <root>/dev_data/raw/<machine>/attributes_00.csv          (optional)
    <root>/eval_data/raw/<machine>/{train,test}/*.wav

Problems in the data are errors (``DatasetError``) naming the file or folder, never silent
skips: a half-extracted archive must not turn into a quietly smaller dataset.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asdlib import atomic

DATASET_DIRS = {"dev": "dev_data", "eval": "eval_data"}
SPLITS = ("train", "test")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
HIDDEN_ATTRIBUTE = "noAttribute"

CLIP_TABLE_COLUMNS = ["path", "name", "machine", "section", "split", "domain", "label",
                      "index", "attributes", "dataset"]
MANIFEST_COLUMNS = ["path", "machine", "section", "split", "domain", "label", "index",
                    "attributes", "channels", "sample_rate", "samples", "sha256"]
KINDS_FILE = "ground_truth_kinds.csv"
_ATTRIBUTE_CSV = re.compile(r"^attributes_(\d{2})\.csv$")


class DatasetError(ValueError):
    """The dataset on disk does not follow the DCASE layout; the message says where and why."""


class ManifestMismatch(DatasetError):
    """Files on disk differ from a manifest: missing, extra, or changed (hash differs)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} manifest problem(s):\n  {shown}{more}")

    def __reduce__(self):
        return (type(self), (self.problems,))


# --------------------------------------------------------------------------- clip names

def normalize_attributes(attributes: str) -> str:
    """Case-folded attribute string, for grouping clips into attribute classes.

    The official data has one case quirk (``pro_y`` next to ``pro_Y``); the raw string is
    always kept, and this normalised form (``str.lower()`` of the whole string, so
    ``noAttribute`` -> ``noattribute``) treats such spellings as one condition.
    """
    return attributes.lower()


def attribute_pairs(attributes: str) -> list[tuple[str, str]]:
    """Split an attribute string into (key, value) pairs, in order, repeats kept.

    ``"car_B1_spd_2_mic_2_mic_1"`` -> ``[("car", "B1"), ("spd", "2"), ("mic", "2"),
    ("mic", "1")]``. ``""`` and ``"noAttribute"`` (hidden attributes) give ``[]``; a
    ``noAttribute`` token after real pairs is dropped. An odd number of tokens raises
    DatasetError (a value containing ``_`` cannot be told from a key).
    """
    tokens = [t for t in attributes.split("_") if t != HIDDEN_ATTRIBUTE] if attributes else []
    if any(t == "" for t in tokens):
        raise DatasetError(f"attribute string {attributes!r} has an empty part")
    if len(tokens) % 2:
        raise DatasetError(f"attribute string {attributes!r} does not split into key_value "
                           f"pairs ({len(tokens)} parts)")
    return [(tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2)]


@dataclass(frozen=True)
class ClipName:
    """The fields encoded in a DCASE clip file name.

    domain, split and label are None for unlabeled evaluation test names
    (``section_00_0000.wav``); ``attributes`` is the raw attribute string ("" when absent).
    """

    section: str
    domain: str | None
    split: str | None
    label: str | None
    index: int
    attributes: str
    name: str = ""

    @property
    def is_labeled(self) -> bool:
        """True when the name carries domain, split and normal/anomaly label."""
        return self.label is not None

    @property
    def attributes_hidden(self) -> bool:
        """True when the name shows no attribute values (absent or ``noAttribute``)."""
        return not [t for t in self.attributes.split("_") if t and t != HIDDEN_ATTRIBUTE]

    @property
    def normalized_attributes(self) -> str:
        """See ``normalize_attributes``."""
        return normalize_attributes(self.attributes)

    def attribute_pairs(self) -> list[tuple[str, str]]:
        """See ``attribute_pairs``."""
        return attribute_pairs(self.attributes)


def parse_clip_name(name: str | os.PathLike) -> ClipName:
    """Parse a DCASE 2023-2026 clip name (a directory part is ignored).

    Accepted forms (``.wav`` may be left off, as in the evaluator's ground-truth files):
    ``section_00_source_train_normal_0000_<attr>.wav``,
    ``section_00_target_test_anomaly_0012.wav`` (no attributes, 2023 style),
    ``section_00_0000.wav`` (evaluation test clip: no domain, split or label).
    Anything else raises DatasetError naming the file and the first wrong part.
    """
    name = Path(name).name
    stem = name
    if stem.endswith(".wav"):
        stem = stem[:-4]
    elif "." in stem:
        raise DatasetError(f"{name}: not a .wav name (extension must be lower-case '.wav')")

    def bad(reason: str) -> DatasetError:
        return DatasetError(f"{name}: bad clip name: {reason}")

    parts = stem.split("_")
    if parts[0] != "section":
        raise bad("must start with 'section_'")
    if len(parts) < 2 or not re.fullmatch(r"\d{2}", parts[1]):
        raise bad("section must be two digits, e.g. 'section_00'")
    section = parts[1]
    if len(parts) < 3:
        raise bad("nothing after the section")
    if parts[2].isdigit():
        if len(parts) > 3:
            raise bad("an unlabeled (evaluation test) name 'section_00_0000' has no further "
                      f"parts, found {'_'.join(parts[3:])!r}")
        return ClipName(section, None, None, None, int(parts[2]), "", name)
    if parts[2] not in DOMAINS:
        raise bad(f"domain must be 'source' or 'target', found {parts[2]!r}")
    if len(parts) < 4 or parts[3] not in SPLITS:
        found = parts[3] if len(parts) > 3 else "nothing"
        raise bad(f"split must be 'train' or 'test', found {found!r}")
    if len(parts) < 5 or parts[4] not in LABELS:
        found = parts[4] if len(parts) > 4 else "nothing"
        raise bad(f"label must be 'normal' or 'anomaly', found {found!r} (label missing?)")
    if len(parts) < 6 or not parts[5].isdigit():
        found = parts[5] if len(parts) > 5 else "nothing"
        raise bad(f"index must be digits, found {found!r}")
    attributes = "_".join(parts[6:])
    if len(parts) > 6 and any(p == "" for p in parts[6:]):
        raise bad(f"attribute string {attributes!r} has an empty part (double or trailing '_')")
    return ClipName(section, parts[2], parts[3], parts[4], int(parts[5]), attributes, name)


# --------------------------------------------------------------------------- scanning

def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _read_attribute_csvs(machine_dir: Path, splits: tuple[str, ...]) -> pd.DataFrame | None:
    """Read ``attributes_XX.csv`` files: one row per wav, columns ``split``, ``name`` and
    ``attr_<column>`` for each official column after ``file_name`` (d1p, d1v, ...).

    The official ``file_name`` is ``<machine>/<split>/<wav>``; only the split and the wav
    name are used (the machine part is not checked, folders get renamed). Rows whose split
    is not scanned are dropped. Any column count is accepted.
    """
    frames = []
    for csv_path in sorted(machine_dir.iterdir()):
        if not _ATTRIBUTE_CSV.match(csv_path.name):
            continue
        try:
            raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{csv_path}: unreadable attributes file: {exc}") from exc
        raw.columns = [str(c).strip() for c in raw.columns]
        if "file_name" not in raw.columns:
            raise DatasetError(f"{csv_path}: no 'file_name' column (found {list(raw.columns)})")
        parts = raw["file_name"].str.strip().str.split("/")
        bad_rows = [fn for fn, p in zip(raw["file_name"], parts) if len(p) < 2 or p[-2] not in SPLITS]
        if bad_rows:
            raise DatasetError(f"{csv_path}: file_name must look like '<machine>/<train|test>/"
                               f"<wav>', found e.g. {bad_rows[0]!r}")
        frame = pd.DataFrame({"split": [p[-2] for p in parts], "name": [p[-1] for p in parts]})
        for column in raw.columns:
            if column != "file_name" and not column.startswith("Unnamed"):
                frame[f"attr_{column}"] = raw[column].str.strip().to_numpy()
        frame["_csv"] = csv_path.name
        frames.append(frame)
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    duplicated = table[table.duplicated(["split", "name"], keep=False)]
    if len(duplicated):
        raise DatasetError(f"{machine_dir}: attributes csv lists "
                           f"{duplicated['split'].iloc[0]}/{duplicated['name'].iloc[0]} twice")
    return table[table["split"].isin(splits)].reset_index(drop=True)


def _check_attribute_consistency(machine_dir: Path, clips: pd.DataFrame,
                                 attrs: pd.DataFrame) -> None:
    """Every csv row must name an existing wav; where the name shows attributes, the csv's
    non-empty values joined by '_' must equal them (case-folded, see normalize_attributes;
    ``noAttribute`` ignored on both sides)."""
    present = set(zip(clips["split"], clips["name"]))
    missing = [f"{s}/{n}" for s, n in zip(attrs["split"], attrs["name"]) if (s, n) not in present]
    if missing:
        raise DatasetError(f"{machine_dir}: attributes csv lists {len(missing)} wav file(s) that "
                           f"are not on disk, e.g. {missing[:3]} (incomplete extraction?)")
    value_columns = [c for c in attrs.columns if c.startswith("attr_")]
    name_attributes = dict(zip(zip(clips["split"], clips["name"]), clips["attributes"]))

    def tokens(values) -> list[str]:
        return [v.lower() for v in values if v not in ("", HIDDEN_ATTRIBUTE)]

    for row in attrs.to_dict("records"):
        from_name = tokens(name_attributes[(row["split"], row["name"])].split("_"))
        if not from_name:
            continue  # hidden in the name: the csv is the only source
        from_csv = tokens(str(row[c]) for c in value_columns)
        if "_".join(from_csv) != "_".join(from_name):
            raise DatasetError(
                f"{machine_dir / row['_csv']}: attributes of {row['split']}/{row['name']} are "
                f"{[row[c] for c in value_columns]} in the csv but "
                f"{name_attributes[(row['split'], row['name'])]!r} in the file name")


def scan_machine(machine_dir: str | os.PathLike, dataset: str = "dev",
                 require_labels: bool = True, splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """Clip table of one machine folder (``<root>/<dev|eval>_data/raw/<machine>``).

    Columns: the clip-table contract (path absolute, name, machine, section, split, domain,
    label, index, attributes, dataset), plus ``attr_<column>`` strings from
    ``attributes_XX.csv`` when that file exists (official columns d1p, d1v, ...).
    ``splits``: the split folders that must exist (evaluation data may come without test
    first: pass ``("train",)``). Rows sorted by split (train, test) then name.

    Raises DatasetError for: a missing or empty machine folder, a missing split folder, a
    split folder without wav files, a wav outside train/test or a non-wav file inside, a bad
    name, a name whose split disagrees with its folder, a train clip that is not labelled
    normal, duplicated names (also up to case), a test folder mixing labelled and unlabeled
    names, unlabeled dev test names when ``require_labels`` (dev only; eval test clips are
    unlabeled by design), and attributes csv rows that disagree with the files.
    """
    if dataset not in DATASET_DIRS:
        raise ValueError(f"dataset must be one of {sorted(DATASET_DIRS)}, got {dataset!r}")
    unknown_splits = set(splits) - set(SPLITS)
    if unknown_splits or not splits:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {splits!r}")
    machine_dir = Path(machine_dir).absolute()
    machine = machine_dir.name
    if not machine_dir.is_dir():
        raise DatasetError(f"{machine_dir}: machine folder does not exist")
    if not _visible_entries(machine_dir):
        raise DatasetError(f"{machine_dir}: machine folder is empty (archive not extracted?)")

    stray = sorted(p for p in machine_dir.rglob("*")
                   if p.is_file() and p.suffix.lower() == ".wav"
                   and (p.parent.parent != machine_dir or p.parent.name not in SPLITS))
    if stray:
        raise DatasetError(f"{machine_dir}: {len(stray)} wav file(s) outside train/ and test/, "
                           f"e.g. {[str(p.relative_to(machine_dir)) for p in stray[:3]]}")

    rows = []
    for split in [s for s in SPLITS if s in splits]:
        split_dir = machine_dir / split
        if not split_dir.is_dir():
            existing = [p.name for p in _visible_entries(machine_dir)]
            raise DatasetError(f"{split_dir}: missing '{split}' folder (machine folder holds "
                               f"{existing})")
        entries = [p for p in _visible_entries(split_dir) if p.is_file()]
        not_wav = [p.name for p in entries if not p.name.endswith(".wav")]
        if not_wav:
            raise DatasetError(f"{split_dir}: {len(not_wav)} file(s) that are not .wav, e.g. "
                               f"{not_wav[:3]}")
        wavs = [p for p in entries if p.name.endswith(".wav")]
        if not wavs:
            raise DatasetError(f"{split_dir}: no wav files")
        labeled = 0
        for wav in wavs:
            clip = parse_clip_name(wav.name)
            if clip.split is not None and clip.split != split:
                raise DatasetError(f"{wav}: name says split '{clip.split}' but the file is in "
                                   f"'{split}/'")
            if split == "train" and (not clip.is_labeled or clip.label != "normal"):
                raise DatasetError(f"{wav}: training clips must be named "
                                   "'section_XX_<domain>_train_normal_<index>...'")
            labeled += clip.is_labeled
            rows.append({"path": str(wav), "name": wav.name, "machine": machine,
                         "section": clip.section, "split": split, "domain": clip.domain,
                         "label": clip.label, "index": clip.index,
                         "attributes": clip.attributes, "dataset": dataset})
        if split == "test":
            if 0 < labeled < len(wavs):
                raise DatasetError(f"{split_dir}: mixes {labeled} labelled and "
                                   f"{len(wavs) - labeled} unlabeled clip names")
            if labeled == 0 and dataset == "dev" and require_labels:
                raise DatasetError(f"{split_dir}: dev test clips carry no normal/anomaly label "
                                   f"(e.g. {wavs[0].name}); pass require_labels=False to accept")

    table = pd.DataFrame(rows, columns=CLIP_TABLE_COLUMNS)
    folded = table["name"].str.lower()
    if folded.duplicated().any():
        dup = sorted(table.loc[folded.duplicated(keep=False), "path"])
        raise DatasetError(f"{machine_dir}: duplicated clip names (compared case-insensitively):"
                           f" {dup[:4]}")

    attrs = _read_attribute_csvs(machine_dir, tuple(splits))
    if attrs is not None:
        _check_attribute_consistency(machine_dir, table, attrs)
        table = table.merge(attrs.drop(columns="_csv"), on=["split", "name"], how="left",
                            validate="one_to_one")
    return _sorted_table(table)


def _sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    """Deterministic order: dataset (dev, eval), machine, split (train, test), name."""
    keys = pd.DataFrame({
        "dataset": table["dataset"].map({"dev": 0, "eval": 1}),
        "machine": table["machine"],
        "split": table["split"].map({"train": 0, "test": 1}),
        "name": table["name"],
    })
    order = keys.sort_values(["dataset", "machine", "split", "name"], kind="mergesort").index
    table = table.loc[order].reset_index(drop=True)
    table["index"] = table["index"].astype(int)
    table["domain"] = table["domain"].astype(object).where(table["domain"].notna(), None)
    table["label"] = table["label"].astype(object).where(table["label"].notna(), None)
    return table


def list_machines(root: str | os.PathLike, dataset: str = "dev") -> list[str]:
    """Machine folder names under ``<root>/<dataset>_data/raw`` (sorted)."""
    raw_dir = Path(root) / DATASET_DIRS[dataset] / "raw"
    if not raw_dir.is_dir():
        raise DatasetError(f"{raw_dir}: no {dataset} data folder")
    return sorted(p.name for p in _visible_entries(raw_dir) if p.is_dir())


def scan_dataset(root: str | os.PathLike, machines=None, datasets=("dev",),
                 require_labels: bool = True, splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """Clip table of several machines and datasets (see ``scan_machine`` for columns/checks).

    machines: names to include (None = every machine folder). A requested machine found in
    none of ``datasets`` raises DatasetError listing the machines that exist.
    Rows sorted by dataset, machine, split (train, test), name.
    """
    if isinstance(datasets, str):
        datasets = (datasets,)
    if isinstance(machines, str):
        machines = [machines]
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist")
    for dataset in datasets:
        if dataset not in DATASET_DIRS:
            raise ValueError(f"dataset must be one of {sorted(DATASET_DIRS)}, got {dataset!r}")
    available = {dataset: list_machines(root, dataset) for dataset in datasets}
    if machines is not None:
        known = set().union(*available.values())
        unknown = [m for m in machines if m not in known]
        if unknown:
            listing = "; ".join(f"{d}: {', '.join(ms) or '(none)'}" for d, ms in available.items())
            raise DatasetError(f"unknown machine(s) {unknown} under {root}; available: {listing}")
    tables = []
    for dataset in datasets:
        names = available[dataset] if machines is None else \
            [m for m in available[dataset] if m in set(machines)]
        if machines is None and not names:
            raise DatasetError(f"{root / DATASET_DIRS[dataset] / 'raw'}: no machine folders")
        for machine in names:
            machine_dir = root / DATASET_DIRS[dataset] / "raw" / machine
            tables.append(scan_machine(machine_dir, dataset, require_labels, splits))
    if not tables:
        return pd.DataFrame(columns=CLIP_TABLE_COLUMNS)
    return _sorted_table(pd.concat(tables, ignore_index=True))


# --------------------------------------------------------------------------- manifest

file_sha256 = atomic.file_sha256


def build_manifest(table: pd.DataFrame, root: str | os.PathLike,
                   probe_audio: bool = True, hashes=None) -> pd.DataFrame:
    """Manifest of the clips of a clip table: one row per file, sorted by path.

    Columns: path (relative to ``root``, posix), machine, section, split, domain, label,
    index, attributes, channels, sample_rate, samples (header facts from
    ``asdlib.audio.probe_clip``; missing when ``probe_audio`` is False), sha256 of the bytes.
    hashes: ``hashes(path) -> hex sha256`` (e.g. `asdlib.fingerprint.FileHashCache.sha256`,
    which re-hashes only changed files); default: hash every file.
    Every file that is not a complete wav is reported at once: one DatasetError lists them.
    """
    from asdlib import audio

    hashes = hashes or file_sha256
    root = Path(root).absolute()
    rows, bad = [], []
    for clip in table.itertuples(index=False):
        path = Path(clip.path)
        try:
            relative = path.absolute().relative_to(root).as_posix()
        except ValueError as exc:
            raise DatasetError(f"{path}: not under the manifest root {root}") from exc
        try:
            info = audio.probe_clip(path) if probe_audio else None
        except audio.AudioError as exc:
            bad.append(str(exc))
            continue
        rows.append({
            "path": relative, "machine": clip.machine, "section": clip.section,
            "split": clip.split, "domain": clip.domain, "label": clip.label,
            "index": int(clip.index), "attributes": clip.attributes,
            "channels": info.channels if info else None,
            "sample_rate": info.sample_rate if info else None,
            "samples": info.samples if info else None,
            "sha256": hashes(path),
        })
    if bad:
        shown = "\n  ".join(bad[:50])
        more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
        raise DatasetError(f"{len(bad)} of {len(table)} clip(s) under {root} are not usable "
                           f"wav files:\n  {shown}{more}")
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return _typed_manifest(manifest.sort_values("path", kind="mergesort").reset_index(drop=True))


def manifest_key(manifest: pd.DataFrame, split: str | None = None) -> str:
    """SHA-256 over the (path, sha256) pairs of a manifest, or of its rows of one ``split``:
    the content key of the data a step or cache depends on."""
    import hashlib

    rows = manifest if split is None else manifest[manifest["split"] == split]
    h = hashlib.sha256()
    for path, digest in sorted(zip(rows["path"], rows["sha256"])):
        h.update(f"{path}\0{digest}\n".encode())
    return h.hexdigest()


def manifest_notices(manifest: pd.DataFrame, sample_rate: int | None = None) -> list[str]:
    """What a user should know before a run reads these clips: files at another sample rate
    (they are resampled) and a mix of mono and stereo files (mono clips have no far-field
    channel). One line each; empty when neither applies."""
    from asdlib.audio import SAMPLE_RATE

    sample_rate = sample_rate or SAMPLE_RATE
    notices = []
    rates = manifest["sample_rate"].dropna().astype(int)
    other = manifest.loc[rates.index[rates != sample_rate], "path"]
    if len(other):
        found = ", ".join(f"{r} Hz" for r in sorted(set(rates) - {sample_rate}))
        notices.append(f"{len(other)} clip(s) are at {found} and are resampled to "
                       f"{sample_rate} Hz when read (first: {other.iloc[0]})")
    channels = manifest["channels"].dropna().astype(int)
    if channels.nunique() > 1:
        counts = ", ".join(f"{(channels == c).sum()} with {c} channel(s)" for c in sorted(set(channels)))
        mono = manifest.loc[channels.index[channels == 1], "path"]
        notices.append(f"mixed channel counts ({counts}): the near channel is channel 0 of every "
                       f"clip; mono clips have no far-field channel (first: {mono.iloc[0]})")
    return notices


def _typed_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    for column in ("index", "channels", "sample_rate", "samples"):
        manifest[column] = pd.array(manifest[column], dtype="Int64")
    for column in ("domain", "label"):
        values = manifest[column].astype(object)
        manifest[column] = values.where(values.notna() & (values != ""), None)
    manifest["attributes"] = manifest["attributes"].fillna("").astype(str)
    manifest["section"] = manifest["section"].astype(str)
    return manifest


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a manifest as CSV atomically (temporary file + os.replace).

    Stable formatting: fixed column order, rows sorted by path, '\\n' line ends, empty
    cells for missing values, so an unchanged dataset gives a byte-identical file.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    manifest = _typed_manifest(manifest[MANIFEST_COLUMNS].copy())
    manifest = manifest.sort_values("path", kind="mergesort")
    buffer = io.StringIO()
    manifest.to_csv(buffer, index=False, lineterminator="\n", na_rep="")
    atomic.write_text(path, buffer.getvalue(), fsync=True)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by ``write_manifest`` (same columns and dtypes as built)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: manifest does not exist")
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"{path}: manifest lacks columns {missing}")
    manifest = manifest[MANIFEST_COLUMNS].copy()
    for column in ("index", "channels", "sample_rate", "samples"):
        manifest[column] = pd.to_numeric(manifest[column].where(manifest[column] != "", None))
    return _typed_manifest(manifest)


def verify_manifest(root: str | os.PathLike, manifest_path: str | os.PathLike,
                    raise_on_mismatch: bool = True, check_hash: bool = True,
                    hashes=None) -> list[str]:
    """Compare the wav files under ``root`` with a manifest.

    Looks at the machine folders the manifest names (``<dataset>_data/raw/<machine>``) and
    reports files that are missing, extra (a wav there that the manifest lacks), or whose
    SHA-256 differs. Returns the list of problems (empty = all good); with
    ``raise_on_mismatch`` (default) a non-empty list raises ManifestMismatch instead.
    hashes: as in `build_manifest`.
    """
    hashes = hashes or file_sha256
    root = Path(root).absolute()
    manifest = read_manifest(manifest_path)
    expected = dict(zip(manifest["path"], manifest["sha256"]))
    machine_dirs = sorted({"/".join(p.split("/")[:3]) for p in expected})
    on_disk = set()
    for machine_dir in machine_dirs:
        folder = root / machine_dir
        if folder.is_dir():
            on_disk.update(p.relative_to(root).as_posix() for p in folder.rglob("*.wav"))
    problems = [f"missing: {p}" for p in sorted(set(expected) - on_disk)]
    problems += [f"extra: {p}" for p in sorted(on_disk - set(expected))]
    if check_hash:
        for relative in sorted(set(expected) & on_disk):
            actual = hashes(root / relative)
            if actual != expected[relative]:
                problems.append(f"hash differs: {relative} (manifest {expected[relative][:12]}..., "
                                f"file {actual[:12]}...)")
    if problems and raise_on_mismatch:
        raise ManifestMismatch(problems)
    return problems


# --------------------------------------------------------------------------- synthetic truth

def read_anomaly_kinds(root: str | os.PathLike, machine: str) -> pd.Series:
    """Anomaly kind per test clip of the synthetic dataset (name -> kind).

    Reads ``<root>/dev_data/raw/<machine>/ground_truth_kinds.csv`` (columns name, kind),
    written by ``asdlib.synth``; returns an empty Series when the file is absent (real data).
    """
    path = Path(root) / DATASET_DIRS["dev"] / "raw" / machine / KINDS_FILE
    if not path.is_file():
        return pd.Series([], index=pd.Index([], name="name", dtype=object), name="kind",
                         dtype=object)
    kinds = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"name", "kind"} <= set(kinds.columns):
        raise DatasetError(f"{path}: needs columns name,kind (found {list(kinds.columns)})")
    if kinds["name"].duplicated().any():
        raise DatasetError(f"{path}: duplicated names, e.g. "
                           f"{kinds.loc[kinds['name'].duplicated(), 'name'].iloc[0]}")
    return pd.Series(kinds["kind"].to_numpy(), index=pd.Index(kinds["name"], name="name"),
                     name="kind", dtype=object)

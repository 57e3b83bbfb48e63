"""The files a synthetic dataset consists of: canonical WAV bytes, clip files written
atomically, the per-machine csv files (``attributes_00.csv``, ``ground_truth_kinds.csv``)
and the evaluation ground truth in the official evaluator's layout."""

from __future__ import annotations

import csv
import io
import struct
from pathlib import Path

import numpy as np

from asdlib import atomic
from asdlib.synth.plan import HIDDEN_ATTRIBUTE, ClipSpec, Preset, model_for
from asdlib.synth.render import ClipAudio, render_clip

KINDS_FILE = "ground_truth_kinds.csv"
ATTRIBUTES_FILE = "attributes_00.csv"
ATTR_COLUMNS = ("d1p", "d1v", "d2p", "d2v", "d3p", "d3v")
#: Folder of the evaluation ground truth under the root (read by tests and benchmarks only).
GROUND_TRUTH_DIR = "eval_ground_truth"
#: Its sub-folders: the official evaluator's three, plus the synthetic anomaly kinds.
GROUND_TRUTH_FOLDERS = ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes",
                        "ground_truth_kinds")
GROUND_TRUTH_FILE = "ground_truth_{machine}_section_00_test.csv"


def pcm16(audio: ClipAudio, channels: int = 2) -> np.ndarray:
    """Interleaved int16 samples (N, channels): near, far (stereo) or near alone (mono)."""
    if channels == 2:
        frames = np.stack([audio.near, audio.far], axis=1)
    elif channels == 1:
        frames = audio.near[:, None]
    else:
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    return np.clip(np.round(frames * 32767.0), -32768, 32767).astype("<i2")


def wav_bytes(pcm: np.ndarray, sr: int) -> bytes:
    """A canonical 44-byte-header PCM WAV (bytes depend only on the samples)."""
    channels = pcm.shape[1]
    data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1,
                         channels, sr, sr * 2 * channels, 2 * channels, 16, b"data", len(data))
    return header + data


def is_complete(path: Path, p: Preset, channels: int = 2) -> bool:
    """True when the clip file exists with its exact expected size."""
    try:
        return path.stat().st_size == p.clip_bytes(channels)
    except FileNotFoundError:
        return False


def write_clip(root: Path, spec: ClipSpec, p: Preset, seed: int, variant: str,
               channels: int = 2) -> None:
    """Render one clip and write it atomically under ``root``."""
    audio = render_clip(spec, p, seed, variant)
    atomic.write_bytes(root / spec.root_relpath, wav_bytes(pcm16(audio, channels), p.sample_rate))


def write_clips(args) -> int:
    """``write_clip`` over ``(root, specs, p, seed, variant, channels)`` (a worker's job)."""
    root, specs, p, seed, variant, channels = args
    for spec in specs:
        write_clip(root, spec, p, seed, variant, channels)
    return len(specs)


def _csv_text(rows, header=None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def machine_file_names(dataset: str = "dev") -> tuple[str, ...]:
    """The csv files in a machine folder: attributes and anomaly kinds (dev), attributes
    of the training clips only (eval: its test clips' truth is in the ground truth)."""
    return (ATTRIBUTES_FILE, KINDS_FILE) if dataset == "dev" else (ATTRIBUTES_FILE,)


def machine_files(raw_dir: Path, machine: str, plan: list[ClipSpec], dataset: str = "dev") -> None:
    """Write attributes_00.csv (and, dev only, ground_truth_kinds.csv) of one machine."""
    specs = [s for s in plan if s.machine == machine]
    if dataset == "eval":  # an eval test clip's attributes would give its domain away
        specs = [s for s in specs if s.split == "train"]
    rows = []
    for s in specs:
        if model_for(machine).hidden:
            values = [HIDDEN_ATTRIBUTE, ""]
        else:
            values = [v for pair in s.condition for v in pair]
        values = (values + [""] * len(ATTR_COLUMNS))[: len(ATTR_COLUMNS)]
        rows.append([f"{machine}/{s.split}/{s.name}"] + values)
    atomic.write_text(raw_dir / machine / ATTRIBUTES_FILE,
                      _csv_text(rows, ("file_name",) + ATTR_COLUMNS))
    if dataset == "dev":
        kinds = [(s.name, s.kind) for s in specs if s.split == "test"]
        atomic.write_text(raw_dir / machine / KINDS_FILE, _csv_text(kinds, ("name", "kind")))


def ground_truth_paths(root: Path, machine: str) -> list[Path]:
    """The ground-truth files of one evaluation machine, in ``GROUND_TRUTH_FOLDERS`` order."""
    name = GROUND_TRUTH_FILE.format(machine=machine)
    return [Path(root) / GROUND_TRUTH_DIR / folder / name for folder in GROUND_TRUTH_FOLDERS]


def write_ground_truth(root: Path, machine: str, plan: list[ClipSpec]) -> None:
    """Write the ground truth of one evaluation machine's test clips, headerless rows in
    name order: ``<wav>,<1 anomaly|0 normal>`` (data), ``<wav>,<1 target|0 source>``
    (domain), ``<wav>,<development-style name>`` (attributes), ``<wav>,<kind>`` (kinds)."""
    tests = sorted((s for s in plan if s.machine == machine and s.eval_index is not None),
                   key=lambda s: s.eval_index)
    values = (lambda s: int(s.label == "anomaly"), lambda s: int(s.domain == "target"),
              lambda s: s.labelled_name, lambda s: s.kind)
    for path, value in zip(ground_truth_paths(root, machine), values):
        atomic.write_text(path, _csv_text([(s.name, value(s)) for s in tests]))

"""Deterministic synthetic machine-sound dataset in the DCASE 2026 Task 2 layout.

The real development data cannot be downloaded here, so every command runs by default on
this generator's output. It writes, for the seven 2026 development machine types
(``raw`` = ``<root>/dev_data/raw``)::

    raw/<machine>/train/section_00_{source|target}_train_normal_<iiii>_<attr>.wav
    raw/<machine>/test/section_00_{source|target}_test_{normal|anomaly}_<iiii>_<attr>.wav
    raw/<machine>/attributes_00.csv        (file_name,d1p,d1v,d2p,d2v,d3p,d3v)
    raw/<machine>/ground_truth_kinds.csv   (name,kind for every test clip)
    <root>/synth_info.json                 (generator version, seed, preset, machines done)

Indices run from 0000 within each (split, domain, label) cell, as in the official names.
Clips are 16-bit PCM stereo at 16 kHz: channel 0 the near-field microphone, channel 1 a
far-field microphone (attenuated, low-passed, reverberant, plus non-stationary background
noise at a per-clip SNR of 0-15 dB).

With ``datasets=("dev", "eval")`` it adds the evaluation split of the five 2026
evaluation machine types (``EVAL_MACHINES``), as DCASE publishes it::

    <root>/eval_data/raw/<machine>/train/section_00_{source|target}_train_normal_<iiii>_<attr>.wav
    <root>/eval_data/raw/<machine>/test/section_00_<iiii>.wav   (unlabelled, shuffled)
    <root>/eval_data/raw/<machine>/attributes_00.csv            (training clips)
    <root>/eval_ground_truth/ground_truth_{data,domain,attributes,kinds}/
        ground_truth_<machine>_section_00_test.csv              (tests and benchmarks only)

With ``year=2025`` it writes a mono set (the near channel only, as the DCASE 2023-2025
data is) under the 2025 development machine names (``YEARS``).

Every clip is rendered from its own random stream, seeded from
``(seed, machine, split, domain, label, index)`` through
``numpy.random.SeedSequence`` (machine names enter as a SHA-256 digest, never Python's
salted ``hash``), so any clip can be regenerated alone and the bytes do not depend on the
order or the number of clips generated. Files are written to a hidden temporary name and
moved into place with ``os.replace``; an interrupted run leaves no partial ``.wav`` and a
re-run only renders what is missing.

Test anomalies come in three kinds (``KINDS``), listed per clip in
``ground_truth_kinds.csv``: ``transient`` (1-3 impacts of 20-150 ms), ``narrowband`` (a
sustained fault tone or narrow resonance) and ``broad`` (spectral tilt, extra broadband
noise, or speed irregularity). docs/SYNTHETIC_DATA.md describes the sound models.

The package, by role:

- `asdlib.synth.signals`: signal helpers (shaped noise, resonances, harmonics, impacts);
- `asdlib.synth.machines`: one module per machine sound model, the base `Machine` and
  `FaultStyle`, and the registry ``MODELS``;
- `asdlib.synth.recording`: the factory background and the far-field microphone;
- `asdlib.synth.plan`: presets, variants, years, `ClipSpec`, `clip_plan`, clip seeds;
- `asdlib.synth.render`: `render_clip` (one clip, in memory);
- `asdlib.synth.files`: WAV bytes, clip files, csv files, evaluation ground truth;
- `asdlib.synth.dataset`: the info file, the lock, `generate_dataset`, `ensure_dataset`,
  `missing_clips`.

Nothing runs on import; ``generate_dataset`` / ``ensure_dataset`` are the entry points.
"""

from __future__ import annotations

from asdlib.synth.dataset import (GENERATOR_VERSION, INFO_FILE, LOCK_FILE, SynthError,
                                  ensure_dataset, generate_dataset, missing_clips)
from asdlib.synth.files import (ATTRIBUTES_FILE, GROUND_TRUTH_DIR, GROUND_TRUTH_FILE,
                                GROUND_TRUTH_FOLDERS, KINDS_FILE, ground_truth_paths)
from asdlib.synth.machines import FaultStyle, Machine
from asdlib.synth.plan import (DATASETS, DEFAULT_YEAR, DOMAINS, EVAL_MACHINES, HIDDEN_ATTRIBUTE,
                               KINDS, LABELS, MACHINES, PRESETS, SPLITS, VARIANTS, YEARS, ClipSpec,
                               Preset, Variant, YearSet, clip_plan, clip_seed, dataset_machines,
                               model_for, resolve_preset, resolve_variant, resolve_year)
from asdlib.synth.render import ClipAudio, render_clip

__all__ = [
    "ATTRIBUTES_FILE", "DATASETS", "DEFAULT_YEAR", "DOMAINS", "EVAL_MACHINES",
    "GENERATOR_VERSION", "GROUND_TRUTH_DIR", "GROUND_TRUTH_FILE", "GROUND_TRUTH_FOLDERS",
    "HIDDEN_ATTRIBUTE", "INFO_FILE", "KINDS", "KINDS_FILE", "LABELS", "LOCK_FILE", "MACHINES",
    "PRESETS", "SPLITS", "VARIANTS", "YEARS", "ClipAudio", "ClipSpec", "FaultStyle", "Machine",
    "Preset", "SynthError", "Variant", "YearSet", "clip_plan", "clip_seed", "dataset_machines",
    "ensure_dataset", "generate_dataset", "ground_truth_paths", "missing_clips", "model_for",
    "render_clip", "resolve_preset", "resolve_variant", "resolve_year",
]

"""What a synthetic dataset holds: machine names per layout (year) and dataset (dev,
eval), sizes (`Preset`), generator settings (`Variant`), and the clip plan (`ClipSpec`,
`clip_plan`) with every clip's own seed (`clip_seed`). No audio here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from asdlib.synth.machines import MODELS, Machine

#: Fixed salt of every clip seed. Never change it: that would re-draw every clip.
SEED_STREAM = 1

#: The 2026 development machine types (the embedded default dataset).
MACHINES: tuple[str, ...] = ("bearingEmu", "fan", "gearboxEmu", "sliderEmu", "ToyCar",
                             "ToyCarEmu", "valveEmu")
#: The 2026 evaluation machine types (``datasets=("dev", "eval")``).
EVAL_MACHINES: tuple[str, ...] = ("ToyDrone", "ToothBrush", "SewingMachine",
                                  "BlowerDustCollector", "Sander")
KINDS: tuple[str, ...] = ("transient", "narrowband", "broad")
SPLITS = ("train", "test")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
DATASETS = ("dev", "eval")
#: Folder of each dataset under the root (as `asdlib.data.DATASET_DIRS`).
DATASET_DIRS = {"dev": "dev_data", "eval": "eval_data"}
HIDDEN_ATTRIBUTE = "noAttribute"
WAV_HEADER_BYTES = 44
DEFAULT_YEAR = 2026


@dataclass(frozen=True)
class Preset:
    """Size of a synthetic dataset, per machine type.

    n_source_train / n_target_train: normal training clips per domain;
    n_test_per_cell: test clips in each of the four (domain, label) cells;
    seconds: clip length; sample_rate: Hz.
    """

    n_source_train: int
    n_target_train: int
    n_test_per_cell: int
    seconds: float
    sample_rate: int = 16000

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def clips_per_machine(self) -> int:
        return self.n_source_train + self.n_target_train + 4 * self.n_test_per_cell

    @property
    def bytes_per_clip(self) -> int:
        """Size of a stereo clip file."""
        return self.clip_bytes(2)

    def clip_bytes(self, channels: int = 2) -> int:
        """Size of a clip file of ``channels`` 16-bit channels."""
        return WAV_HEADER_BYTES + 2 * channels * self.n_samples


PRESETS: dict[str, Preset] = {
    # unit tests and the CI pipeline: seconds to generate, seconds to process
    "tiny": Preset(n_source_train=12, n_target_train=4, n_test_per_cell=4, seconds=2.0),
    # the default run: AUCs mean something, the CPU pipeline fits in minutes
    "demo": Preset(n_source_train=100, n_target_train=10, n_test_per_cell=24, seconds=6.0),
    # the size of the official development set
    "dcase": Preset(n_source_train=990, n_target_train=10, n_test_per_cell=50, seconds=10.0),
}


@dataclass(frozen=True)
class Variant:
    """A generator setting for held-out data: how faults and recordings differ from the
    default every choice of the project was tuned on (the default leaves every draw as it
    was, so the embedded dataset does not change).

    transient_seconds: duration range of each impact; transient_db_shift: added to every
    machine's impact level range; narrow_hz_scale: multiplies every machine's fault-tone
    range (other tone frequencies); narrow_db_shift: added to the fault-tone level range;
    far_snr_db: range of the far-field SNR; speed_scale: multiplies every machine's running
    speed (a machine model's parameters moved, in training and test clips alike).
    """

    name: str
    transient_seconds: tuple[float, float] = (0.02, 0.15)
    transient_db_shift: float = 0.0
    narrow_hz_scale: float = 1.0
    narrow_db_shift: float = 0.0
    far_snr_db: tuple[float, float] = (0.0, 15.0)
    speed_scale: float = 1.0


#: Generator variants. "default" is the embedded data; "shifted" is a held-out fault setting
#: that no choice was made on: shorter and 3 dB weaker impacts, fault tones 25 % lower and
#: 1 dB weaker, a far-field SNR 5 dB lower, every machine running 8 % faster.
VARIANTS: dict[str, Variant] = {
    "default": Variant("default"),
    "shifted": Variant("shifted", transient_seconds=(0.01, 0.06), transient_db_shift=-3.0,
                       narrow_hz_scale=0.75, narrow_db_shift=-1.0, far_snr_db=(-5.0, 10.0),
                       speed_scale=1.08),
}


def resolve_variant(variant: str | Variant) -> Variant:
    """A Variant from its name (``VARIANTS``) or itself."""
    if isinstance(variant, Variant):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; variants: {sorted(VARIANTS)}") from None


def resolve_preset(preset: str | Preset) -> Preset:
    """A Preset from its name (``PRESETS``) or itself."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}") from None


# --------------------------------------------------------------------------- years

@dataclass(frozen=True)
class YearSet:
    """One year's layout: development machine names -> the sound model rendering each,
    evaluation machine names (rendered by the model of that name), channels per clip."""

    year: int
    dev: dict[str, str]
    eval: tuple[str, ...]
    channels: int

    @property
    def dev_machines(self) -> tuple[str, ...]:
        return tuple(self.dev)


#: 2026: the stereo default (dev + eval). 2025: a mono set (the near channel only, as the
#: 2023-2025 data is) under the DCASE 2025 development machine names, each rendered by the
#: nearest 2026 model (ToyTrain: the ToyCar model under other attributes); no eval split.
YEARS: dict[int, YearSet] = {
    2026: YearSet(2026, {m: m for m in MACHINES}, EVAL_MACHINES, 2),
    2025: YearSet(2025, {"bearing": "bearingEmu", "fan": "fan", "gearbox": "gearboxEmu",
                         "slider": "sliderEmu", "ToyCar": "ToyCar", "ToyTrain": "ToyTrain",
                         "valve": "valveEmu"}, (), 1),
}
_RENDERED_BY = {name: model for ys in YEARS.values() for name, model in ys.dev.items()}
_RENDERED_BY.update({m: m for m in EVAL_MACHINES})


def resolve_year(year: int) -> YearSet:
    """The YearSet of ``year`` (``YEARS``)."""
    try:
        return YEARS[int(year)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"unknown year {year!r}; years: {sorted(YEARS)}") from None


def model_for(machine: str) -> Machine:
    """The sound model that renders machine folder ``machine`` (any year, dev or eval)."""
    try:
        return MODELS[_RENDERED_BY[machine]]
    except KeyError:
        raise ValueError(f"no synthetic sound model renders {machine!r}") from None


def dataset_machines(dataset: str = "dev", year: int = DEFAULT_YEAR) -> tuple[str, ...]:
    """Machine names of ``dataset`` ("dev" or "eval") in the layout of ``year``."""
    ys = resolve_year(year)
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return ys.dev_machines if dataset == "dev" else ys.eval


def check_machines(machines=None, dataset: str = "dev", year: int = DEFAULT_YEAR) -> list[str]:
    """``machines`` (None = all, a name, or names) of ``dataset`` in canonical order;
    ValueError naming unknown ones."""
    known = dataset_machines(dataset, year)
    if machines is None:
        return list(known)
    if isinstance(machines, str):
        machines = [machines]
    unknown = [m for m in machines if m not in known]
    if unknown:
        raise ValueError(f"unknown machine(s) {unknown}; synthetic {dataset} machines"
                         f"{'' if year == DEFAULT_YEAR else f' of {year}'}: {list(known)}")
    return [m for m in known if m in set(machines)]


def select_machines(machines=None, datasets=("dev",), year: int = DEFAULT_YEAR
                    ) -> dict[str, list[str]]:
    """The machines of each dataset in ``datasets`` that ``machines`` (None = all) names;
    ValueError for a name in none of them, an unknown dataset, or an eval split of a year
    that has none."""
    if isinstance(datasets, str):
        datasets = (datasets,)
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ValueError(f"datasets must be a non-empty subset of {DATASETS}, got {datasets!r}")
    if "eval" in datasets and not resolve_year(year).eval:
        raise ValueError(f"the {year} set has no eval split (only {DEFAULT_YEAR} has one)")
    if isinstance(machines, str):
        machines = [machines]
    known = {d: dataset_machines(d, year) for d in DATASETS if d in datasets}
    if machines is not None:
        unknown = [m for m in machines if not any(m in names for names in known.values())]
        if unknown:
            listing = "; ".join(f"{d}: {list(names)}" for d, names in known.items())
            raise ValueError(f"unknown machine(s) {unknown}; synthetic machines: {listing}")
    return {d: [m for m in names if machines is None or m in set(machines)]
            for d, names in known.items()}


# --------------------------------------------------------------------------- clip plan

@dataclass(frozen=True)
class ClipSpec:
    """One clip of the plan: where it goes and what it is (no audio).

    dataset: "dev" or "eval"; eval_index: the public index of an evaluation test clip
    (named ``section_00_<eval_index>.wav``, its labels hidden), None otherwise.
    """

    machine: str
    split: str
    domain: str
    label: str
    index: int
    condition: tuple[tuple[str, str], ...]  # attribute key/value pairs (hidden ones too)
    kind: str  # "normal" or one of KINDS
    dataset: str = "dev"
    eval_index: int | None = None

    @property
    def attributes(self) -> str:
        if model_for(self.machine).hidden:
            return HIDDEN_ATTRIBUTE
        return "_".join(f"{k}_{v}" for k, v in self.condition)

    @property
    def labelled_name(self) -> str:
        """The development-style name (domain, split, label, index within the cell,
        attributes): the file name, except for an evaluation test clip, where it is the
        hidden truth."""
        return (f"section_00_{self.domain}_{self.split}_{self.label}_{self.index:04d}_"
                f"{self.attributes}.wav")

    @property
    def name(self) -> str:
        if self.eval_index is not None:
            return f"section_00_{self.eval_index:04d}.wav"
        return self.labelled_name

    @property
    def relpath(self) -> str:
        """Path under ``<root>/<dev|eval>_data/raw``."""
        return f"{self.machine}/{self.split}/{self.name}"

    @property
    def root_relpath(self) -> str:
        """Path under the dataset root (``dev_data/raw/...`` or ``eval_data/raw/...``)."""
        return f"{DATASET_DIRS[self.dataset]}/raw/{self.relpath}"


def stable_int(text: str) -> int:
    """A 64-bit integer of ``text`` from its SHA-256 (never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def clip_seed(seed: int, spec: ClipSpec) -> np.random.SeedSequence:
    """The clip's own seed: depends only on (seed, machine, split, domain, label, index)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence([int(seed), stable_int(spec.machine), SPLITS.index(spec.split),
                                   DOMAINS.index(spec.domain), LABELS.index(spec.label),
                                   int(spec.index), SEED_STREAM])


def eval_order(machine: str, n_test: int) -> np.ndarray:
    """Public index of each evaluation test clip, the clips taken in plan order (source
    normal, source anomaly, target normal, target anomaly): a permutation of
    ``range(n_test)`` seeded by the machine name and ``n_test`` only (the names do not
    depend on the dataset seed, as development names do not)."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [stable_int("eval test order"), stable_int(machine), int(n_test), SEED_STREAM]))
    return rng.permutation(n_test)


def clip_plan(preset: str | Preset = "demo", machines=None, dataset: str = "dev",
              year: int = DEFAULT_YEAR) -> list[ClipSpec]:
    """Every clip of a dataset, in a fixed order (machine, split, domain, label, index).

    Attribute combinations rotate with the index (train: index mod #combos; test:
    (index // 3) mod #combos, so that each combination sees every anomaly kind); the kind
    of a test anomaly is ``KINDS[(index + (domain == "target")) % 3]``. ``dataset="eval"``
    plans the evaluation machines the same way, their test clips renamed by `eval_order`.
    """
    p = resolve_preset(preset)
    plan = []
    for machine in check_machines(machines, dataset, year):
        model = model_for(machine)
        specs = []
        for split in SPLITS:
            for domain in DOMAINS:
                combos = model.combos(domain)
                labels = ("normal",) if split == "train" else LABELS
                for label in labels:
                    if split == "train":
                        count = p.n_source_train if domain == "source" else p.n_target_train
                    else:
                        count = p.n_test_per_cell
                    for i in range(count):
                        combo = combos[(i if split == "train" else i // 3) % len(combos)]
                        kind = ("normal" if label == "normal"
                                else KINDS[(i + (domain == "target")) % len(KINDS)])
                        specs.append(ClipSpec(machine, split, domain, label, i,
                                              tuple(combo.items()), kind, dataset))
        if dataset == "eval":
            n_train = p.n_source_train + p.n_target_train
            order = eval_order(machine, len(specs) - n_train)
            specs = specs[:n_train] + [replace(s, eval_index=int(j))
                                       for s, j in zip(specs[n_train:], order)]
        plan.extend(specs)
    return plan

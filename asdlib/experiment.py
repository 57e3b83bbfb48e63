"""One run's configuration and folders, shared by the pipeline and every notebook.

A run lives in ``results/<run>/``: ``config.json`` (the resolved `RunConfig`), one folder
per step (``00_data/`` ... ``07_results/``) for the small outputs that are committed
(tables, figures, scores, submission files), ``notebooks/`` for the executed notebooks,
and ``work/`` for large artefacts that are not committed (checkpoints, feature store).
Defaults live here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from asdlib import atomic
from asdlib.audio import CHANNELS  # noqa: F401  (re-exported: the run options)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: What a run can score with: a microphone (near, far, or the residual near - 0.5 far) or
#: "both" (near and far scored apart and averaged per clip, `asdlib.scoring.combine_channels`):
#: `asdlib.audio.CHANNELS`, imported above.
#: Which part of a DCASE root a run reads: the development set (labelled test clips) or the
#: evaluation set (unlabelled test clips; fusion weights come frozen from a dev run).
DATASETS = ("dev", "eval")
#: How the fine-grained branches search their band banks (`asdlib.scoring.FINE_SEARCH`).
FINE_SEARCHES = ("exact", "pca", "ivf")
#: What notebooks print instead of a metric table when the test clips carry no labels.
NO_LABELS = ("the test clips carry no labels (evaluation set): no metric can be computed "
             "here; the scores and submission files are written")

#: Notebook steps in pipeline order (file stem in ``notebooks/``).
STEPS: tuple[str, ...] = (
    "00_data", "01_finetune", "02_extract", "03_subband", "04_patch", "05_ldn",
    "06_fusion", "07_results", "08_explore",
)


@dataclass
class RunConfig:
    """Everything a run depends on; written to ``results/<run>/config.json``.

    data_root: DCASE-layout root (``<root>/dev_data/raw/<machine>/...``); None builds and
        uses the embedded synthetic dataset of ``preset``.
    preset: synthetic dataset size (tiny, demo, dcase) when ``data_root`` is None; it
        also picks the adaptation and scoring settings sized for that data.
    encoder: path of an official BEATs checkpoint to start from; None starts from the
        named small configuration ``encoder_config``.
    device: "auto" (CUDA when present), "cpu" or "cuda[:i]".
    channel: what is scored: "near" (channel 0), "far" (channel 1), "residual"
        (near - 0.5 far, `asdlib.audio.load_clip`) or "both" (near and far scored apart,
        each standardised by its bank self-scores, averaged per clip). The encoder is
        adapted on the same (on both microphones as separate examples for "both").
    machines: subset of machine types; None = every machine found.
    fusion_config: a frozen fusion file to apply unchanged (evaluation runs); None selects
        weights on the development labels.
    dataset: "dev" (labelled test clips: metrics, weights chosen on the labels) or "eval"
        (``<root>/eval_data``: unlabelled test clips, adaptation on its training clips,
        fusion with the frozen ``fusion_config`` of a dev run, submission files).
    fine_search: how the fine-grained branches search their band banks: "exact" (the
        report's flat search), or approximate and faster at DCASE size: "pca" (candidates
        in 64 principal directions, exact re-ranking) or "ivf" (a faiss inverted file,
        4 of 256 cells visited); measured in docs/PERFORMANCE.md.
    embed_hop: frames between the patch-embedding tokens the fine-grained branches read;
        None: `ExtractConfig.embed_hop` (8, half-overlapping 16-frame patches); 16: the
        encoder's own grid (half the tokens, a quarter of the bank search).
    recipe: adaptation recipe, "auto" (the encoder decides: "cpu" for the project's small
        encoder, "gpu" for an official checkpoint), "cpu" (`AdaptConfig.demo`: 2 s crops,
        full fine-tuning at a low rate, minutes on 2 cores) or "gpu" (`AdaptConfig.dcase`:
        LoRA, whole clips, both channels, SpecAugment, mixup; bfloat16 autocast on CUDA).
    """

    run: str = "demo"
    data_root: str | None = None
    preset: str = "demo"
    seed: int = 0
    encoder: str | None = None
    encoder_config: str = "small"
    device: str = "auto"
    channel: str = "near"
    machines: list[str] | None = None
    fusion_config: str | None = None
    dataset: str = "dev"
    recipe: str = "auto"
    num_threads: int = 0
    fine_search: str = "exact"
    embed_hop: int | None = None
    extra: dict = field(default_factory=dict)

    def resolved_data_root(self) -> Path:
        """The dataset root this run reads (the embedded one when none is given)."""
        if self.data_root:
            return Path(self.data_root).expanduser().resolve()
        return PROJECT_ROOT / "data" / f"synth_{self.preset}_seed{self.seed}"

    def resolved_device(self) -> str:
        """"auto" becomes "cuda" when a GPU is visible, else "cpu" (`asdlib.devices`)."""
        from asdlib.devices import resolve_device

        return str(resolve_device(self.device))

    def with_absolute_paths(self) -> "RunConfig":
        """A copy whose data root, fusion config and encoder file (when a file) are absolute:
        notebooks run in ``results/<run>/notebooks``, not where the command was typed."""
        import dataclasses

        def absolute(value):
            if not value:
                return value
            path = Path(value).expanduser()
            return str(path.resolve()) if path.exists() else value

        return dataclasses.replace(self, data_root=absolute(self.data_root),
                                   fusion_config=absolute(self.fusion_config),
                                   encoder=absolute(self.encoder))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; known: {sorted(known)}")
        return cls(**data)


class Run:
    """Folders and config of one run; what a notebook opens first."""

    def __init__(self, run_dir: str | Path, config: RunConfig):
        self.dir = Path(run_dir).resolve()
        self.config = config

    @classmethod
    def open(cls, run_dir: str | Path) -> "Run":
        """Open ``run_dir``; a folder without ``config.json`` gets the tiny defaults."""
        run_dir = Path(run_dir)
        path = run_dir / "config.json"
        if path.exists():
            config = RunConfig.from_dict(json.loads(path.read_text()))
        else:
            config = RunConfig(run=run_dir.resolve().name, preset="tiny")
            atomic.write_text(path, config.to_json())
        return cls(run_dir, config)

    def step(self, name: str) -> Path:
        """The folder a step writes its committed outputs to (created)."""
        if name not in STEPS:
            raise ValueError(f"unknown step {name!r}; steps: {STEPS}")
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def work(self) -> Path:
        """Large, uncommitted artefacts (checkpoints, feature store)."""
        path = self.dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def keyed_dir(self, name: str, settings: dict) -> Path:
        """``work/<name>/<hash of settings>``: a change of settings never reuses old work."""
        import hashlib

        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        return self.work / name / key.hexdigest()[:16]

    def prune(self, name: str, keep: str | Path) -> list[Path]:
        """Delete the folders under ``work/<name>/`` other than ``keep`` (older settings'
        checkpoints or feature stores, which can be large); returns what was removed."""
        import shutil

        keep = Path(keep).resolve()
        removed = []
        for folder in sorted((self.work / name).glob("*")):
            if folder.is_dir() and folder.resolve() != keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def set_current(self, name: str, path: str | Path) -> None:
        """Record which folder under ``work/`` is the current ``name`` (read by later steps)."""
        rel = Path(path).resolve().relative_to(self.work)
        atomic.write_text(self.work / f"{name}.json", json.dumps({"path": str(rel)}))

    def current(self, name: str, step: str) -> Path:
        """The folder recorded by :meth:`set_current`; ``step`` is named when it is missing."""
        pointer = self.work / f"{name}.json"
        if not pointer.exists():
            raise FileNotFoundError(f"{pointer} missing: run step {step} first")
        return self.work / json.loads(pointer.read_text())["path"]

    def write_clip_table(self, table, root: Path) -> Path:
        """Step 00's clip table -> ``00_data/clip_table.csv``, paths relative to the data root
        ``root`` (a committed run then names no folder of the machine that made it)."""
        import os

        rel = table.assign(path=[Path(os.path.relpath(p, root)).as_posix() for p in table["path"]])
        path = self.step("00_data") / "clip_table.csv"
        atomic.write_text(path, rel.to_csv(index=False))
        return path

    def clip_table(self):
        """The clip table written by step 00, with paths under this run's data root."""
        import pandas as pd

        path = self.dir / "00_data" / "clip_table.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run step 00_data first")
        table = pd.read_csv(path, dtype={"name": str})
        root = self.config.resolved_data_root()
        table["path"] = [str(root / p) for p in table["path"]]
        return table

    def hash_cache(self):
        """The run's `asdlib.fingerprint.FileHashCache` (``work/file_hashes.json``)."""
        from asdlib.fingerprint import FileHashCache

        return FileHashCache(self.work / "file_hashes.json")

    def manifest(self):
        """The data manifest written by step 00 (path, ..., sha256 of every clip)."""
        from asdlib import data

        path = self.dir / "00_data" / "data_manifest.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run step 00_data first")
        return data.read_manifest(path)

    def data_key(self, split: str | None = None) -> str:
        """Content key of the run's clips (or of one split's): `asdlib.data.manifest_key`."""
        from asdlib import data

        return data.manifest_key(self.manifest(), split)

    @property
    def labelled(self) -> bool:
        """True when every test clip of the run has a label (a development set)."""
        table = self.clip_table()
        test = table[table["split"] == "test"]
        return bool(len(test)) and bool(test["label"].notna().all())

    def feature_store(self):
        """The feature store written by step 02 for this run."""
        from asdlib import features

        return features.FeatureStore(self.current("features", "02_extract"))


#: The committed manifest of the embedded default dataset (demo preset, seed 0).
EMBEDDED_MANIFEST = PROJECT_ROOT / "data_manifest.csv"
EMBEDDED_DEFAULT = ("demo", 0)


def dataset_root(config: RunConfig, progress: bool = True, hashes=None) -> Path:
    """The run's dataset root; the embedded synthetic set is generated when missing.

    The embedded default (demo preset, seed 0) is checked against the committed
    ``data_manifest.csv``, so a generator change that alters the data cannot pass unseen
    (``hashes``: a `asdlib.fingerprint.FileHashCache` ``sha256`` makes a repeated check cheap).
    """
    root = config.resolved_data_root()
    if config.data_root:
        return root
    from asdlib import synth

    embedded = (config.preset, config.seed) == EMBEDDED_DEFAULT and EMBEDDED_MANIFEST.exists()
    datasets = ("dev", "eval") if config.dataset == "eval" else ("dev",)
    return Path(synth.ensure_dataset(root, config.preset, config.seed, progress=progress,
                                     manifest=EMBEDDED_MANIFEST if embedded else None,
                                     hashes=hashes, datasets=datasets))


def scan(config: RunConfig, root: Path, hashes=None):
    """``(clip table, manifest, notices)`` of the run's data: the clip table of `clip_table`
    with a ``sha256`` column (each clip's content hash, what caches are keyed by), its
    manifest (`asdlib.data.build_manifest`; every unusable file reported at once) and the
    notices a user should see before the run (`asdlib.data.manifest_notices`)."""
    from asdlib import data

    table = clip_table(config, root)
    manifest = data.build_manifest(table, root, hashes=hashes)
    by_path = dict(zip(manifest["path"], manifest["sha256"]))
    table["sha256"] = [by_path[Path(p).absolute().relative_to(Path(root).absolute()).as_posix()]
                       for p in table["path"]]
    return table, manifest, data.manifest_notices(manifest)


def clip_table(config: RunConfig, root: Path | None = None):
    """Clip table of the run's dataset (machines filtered), with a ``kind`` column.

    ``kind`` is the fault kind of anomalous test clips where the dataset records it
    (the synthetic set does; the real one does not: "anomaly"), "normal" for normal clips.
    """
    from asdlib import data

    root = root or dataset_root(config)
    labelled = config.dataset == "dev"
    table = data.scan_dataset(root, machines=config.machines, datasets=(config.dataset,),
                              require_labels=labelled)
    kinds = []
    if labelled:  # the synthetic set's fault kinds; an evaluation set has none to read
        for machine, rows in table.groupby("machine", sort=False):
            known = data.read_anomaly_kinds(root, machine)
            kinds.append(rows["name"].map(known))
    kind = pd.concat(kinds).reindex(table.index) if kinds else pd.Series(index=table.index,
                                                                          dtype=object)
    fallback = table["label"].where(table["label"] != "anomaly", "anomaly")
    table["kind"] = kind.fillna(fallback)
    return table



def starting_encoder(config: RunConfig):
    """The encoder adaptation starts from: the official checkpoint when given, else the
    named small configuration (the project's shipped starting weights where they exist)."""
    from asdlib import encoder
    from asdlib.adaptation.small_encoder import starting_encoder as small_start

    if config.encoder:  # a file, a checkpoint name or a URL (`asdlib.checkpoints`)
        from asdlib.checkpoints import resolve

        return encoder.load_beats(resolve(config.encoder), device="cpu")
    return small_start(config.encoder_config, seed=config.seed)


def adaptation_key(run: Run, model, adapt_cfg) -> dict:
    """What the adapted encoder depends on (its folder ``work/adapted/<hash>``): the
    settings, the starting weights, the training clips' content and the code that trains."""
    from asdlib.features import module_hash
    from asdlib.fingerprint import module_code_hash

    return {"adapt": adapt_cfg.fingerprint(), "start": module_hash(model),
            "data": run.data_key("train"),
            "code": module_code_hash("asdlib.adaptation.training")}


RECIPES = ("auto", "cpu", "gpu")


def recipe(config: RunConfig) -> str:
    """The adaptation recipe a run uses: ``config.recipe`` unless "auto", then "gpu" for an
    official checkpoint (``--encoder``) and "cpu" for the project's small encoder, whatever
    the data (the GPU recipe on the small encoder would take hours on a CPU)."""
    if config.recipe != "auto":
        return config.recipe
    return "gpu" if config.encoder else "cpu"


def adapt_config(config: RunConfig):
    """Adaptation settings of the run's recipe (the tiny preset trains 2 epochs)."""
    from asdlib.adaptation.training import AdaptConfig

    common = {"seed": config.seed, "device": config.device, "channel": config.channel,
              "num_threads": config.num_threads or None}
    if recipe(config) == "gpu":  # trains on both microphones unless the residual is scored
        return AdaptConfig.dcase(**{**common, "channel": "residual" if config.channel
                                    == "residual" else "both"})
    if config.preset == "tiny" and not config.data_root:
        return AdaptConfig.demo(epochs=2, **common)
    return AdaptConfig.demo(**common)


def describe_recipe(config: RunConfig) -> str:
    """One line for the console: the recipe, why it was chosen, and its main settings."""
    chosen = recipe(config)
    why = ("--recipe" if config.recipe != "auto" else
           "an official checkpoint was given" if config.encoder else
           "the project's small encoder")
    cfg = adapt_config(config)
    amp = "bfloat16 autocast on CUDA" if cfg.amp else "float32"
    crop = "whole clips" if cfg.crop_seconds is None else f"{cfg.crop_seconds:g} s crops"
    return (f"recipe {chosen} ({why}): {cfg.mode} adaptation, {cfg.epochs} epochs, batch "
            f"{cfg.batch_size}, lr {cfg.lr:g}, {crop}, channel {cfg.channel}, {amp}")


def view_channel(channel: str) -> str:
    """The one microphone that per-clip pictures and diagnostics of a run show: the run's
    channel, or "near" when it scores "both"."""
    return "near" if channel == "both" else channel


def extract_config(config: RunConfig, head_layer: int = -1):
    """Extraction settings of the run: the final layer (clip-level and sub-band branches)
    and the patch embedding before its LayerNorm (fine-grained branches), the run's
    channel; ``head_layer``: the layer the heads were trained on
    (`asdlib.adaptation.heads.heads_layer`)."""
    from asdlib.features import ExtractConfig

    from asdlib.features import EMBED

    hop = {} if config.embed_hop is None else {"embed_hop": config.embed_hop}
    return ExtractConfig(layers=(-1, EMBED), channel=config.channel, device=config.device,
                         num_threads=config.num_threads, head_layer=head_layer, **hop)

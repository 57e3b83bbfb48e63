"""Task adaptation of the encoder (notebook 01_finetune): the training loop.

Proxy classification of the normal training clips with an additive angular margin loss
(ArcFace). Classes are machine type x attribute string, and x domain where the attributes
are hidden, so that target clips still form classes of their own (`proxy_classes`). The
heads (`asdlib.adaptation.heads`) sit on the token grid ``(B, T', 8, D)`` of the chosen
encoder layer; the loss is a list of terms (`asdlib.adaptation.losses`); the modes and
LoRA are in `asdlib.adaptation.lora`.

`adapt` trains with AdamW, linear warm-up + cosine decay, shuffled batches that mix
machines, optional SpecAugment (time/frequency masks on the normalised fbank, applied by a
forward pre-hook on ``patch_embedding``) and input mixup. A batch longer than
``max_batch_seconds`` of padded audio runs as micro-batches whose gradients add up; under
torchrun each process computes a share of every batch and the gradients are summed over the
processes (`asdlib.distributed`), rank 0 writing the checkpoints. Every
epoch ends with an atomic checkpoint ``state.pt``; a run that stops is resumed from its
last finished epoch and ends with exactly the weights of an uninterrupted run (on CPU).
The result is the encoder in the official BEATs format (``encoder.pt``, via
`asdlib.encoder.save_beats`) and the heads (``heads.pt``, `asdlib.adaptation.heads`).

Training-time behaviour stored in the BEATs ``cfg``: ``encoder_layerdrop`` is always
switched off while adapting (short fine-tuning runs gain nothing from it, and it would
hide layers from the heads at random); ``layer_wise_gradient_decay_ratio`` is switched off
unless ``AdaptConfig.keep_layer_grad_decay`` (under AdamW a fixed per-layer gradient
scale is almost a no-op, since Adam normalises each parameter's gradient scale; it only
changes the balance of gradient clipping). Both settings are restored afterwards, so the
saved ``cfg`` is the one that was loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from asdlib import atomic, distributed
from asdlib.adaptation.heads import save_heads
from asdlib.adaptation.losses import Batch, TrainingHeads, loss_terms, proxy_accuracy, total_loss
from asdlib.adaptation.lora import MODES, merge_lora, set_trainable
from asdlib.adaptation.small_encoder import random_gain, zero_mean_patch_filters
from asdlib.audio import CHANNELS, SAMPLE_RATE, padded_tensors
from asdlib.data import normalize_attributes
from asdlib.devices import resolve_device
from asdlib.progress import bar as progress_bar
from asdlib.progress import report

STATE_FILE = "state.pt"
ENCODER_FILE = "encoder.pt"
HEADS_FILE = "heads.pt"


# --------------------------------------------------------------------------- classes


def training_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The clips adaptation may use: split == "train" and not labelled anomalous."""
    keep = (table["split"] == "train") & (table["label"].fillna("normal") != "anomaly")
    return table[keep].reset_index(drop=True)


def _hidden(attributes) -> bool:
    """True when the attribute string hides the condition: empty, or any ``noAttribute`` part."""
    if attributes is None or (isinstance(attributes, float) and math.isnan(attributes)):
        return True
    parts = [t.lower() for t in str(attributes).split("_") if t]
    return not parts or "noattribute" in parts


def proxy_classes(table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Proxy class of every row -> (labels (N,) int64, class_names sorted).

    Class = "machine|attributes" (attributes case-folded, `asdlib.data.normalize_attributes`);
    where the attributes are hidden ("", or a ``noAttribute`` part) it is
    "machine|noattribute|domain", so target clips form their own class. Only training
    clips are accepted: test labels and domains are never used here.
    """
    if (table["split"] != "train").any():
        raise ValueError("proxy_classes takes training clips only (use training_rows(table))")
    names = [f"{m}|noattribute|{d}" if _hidden(a) else f"{m}|{normalize_attributes(str(a))}"
             for m, a, d in zip(table["machine"], table["attributes"], table["domain"])]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes



# --------------------------------------------------------------------------- config


@dataclass
class AdaptConfig:
    """Settings of one adaptation run (presets: `AdaptConfig.demo`, `AdaptConfig.dcase`).

    mode: "full" | "last_n" | "lora" | "frozen". warmup_steps > 0 wins over warmup_ratio.
    Loss = ArcFace(ASP) + band_loss_weight * mean over bands ArcFace(band vector) +
    utt_loss_weight * ArcFace(mean of the valid tokens).
    lr applies to the encoder, lr * head_lr_mult to the heads and ArcFace centres.
    specaugment: time/frequency masks on the normalised fbank (pre-hook on
    ``patch_embedding``; on the token grid when the encoder has none). mixup: input mixup
    of two crops with lam ~ Beta(mixup_alpha, mixup_alpha), loss mixed the same way.
    gain_db: each crop's level is changed by a gain drawn uniformly from +-gain_db dB, so
    the embeddings learn to ignore the recording level (0: off).
    recon_weight: weight of a reconstruction term that keeps the tokens describing their
    own input: a linear map of each token of ``layer`` must give its 16 x 16 normalised
    fbank patch (minus the crop's mean, so the level is not asked for). The proxy
    classification alone discards what does not separate the classes, which an anomaly
    may be made of (measured on the embedded default; README).
    spectrum_weight: weight of `asdlib.adaptation.small_encoder.spectrum_geometry_loss` on the plain mean token of ``layer``
    (the utterance-kNN vector): crops whose mean spectra differ more must lie farther apart,
    so the nearest-neighbour geometry keeps the spectral detail the classes ignore.
    zero_mean_patches: keep every patch-embedding filter zero-mean (projected after each
    step), so tokens describe the shape of a patch rather than its level.
    crop_seconds: random crop of each clip per step (None: whole clips).
    channel: "near" | "far" | "residual" | "both" (near and far as separate examples).
    device: "auto" (CUDA when present) | "cpu" | "cuda[:i]". num_threads: CPU threads
    during the run (None: leave torch's setting). amp: bfloat16 autocast on CUDA (never on
    the CPU, where bfloat16 kernels are slower or, for some shapes, wrong).
    max_batch_seconds: memory bound of one forward pass: a batch whose clips, padded to the
    longest, hold more audio than this is run as several micro-batches of similar length
    whose gradients add up (same update, up to float rounding; the spectrum term then sees
    pairs within a micro-batch only). Matters with whole clips (``crop_seconds`` None).
    """

    mode: str = "full"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-4
    head_lr_mult: float = 3.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0
    arcface_scale: float = 30.0
    arcface_margin: float = 0.2
    easy_margin: bool = False
    band_loss_weight: float = 0.5
    utt_loss_weight: float = 0.0
    emb_dim: int = 128
    layer: int = -1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    last_n: int = 2
    specaugment: bool = False
    time_masks: int = 2
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 16
    mixup: bool = False
    mixup_alpha: float = 0.4
    gain_db: float = 0.0
    recon_weight: float = 0.0
    spectrum_weight: float = 0.0
    zero_mean_patches: bool = False
    balanced: bool = False
    seed: int = 0
    crop_seconds: float | None = 2.0
    channel: str = "near"
    device: str = "auto"
    num_threads: int | None = None
    amp: bool = False
    keep_layer_grad_decay: bool = False
    max_batch_seconds: float = 400.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.max_batch_seconds <= 0:
            raise ValueError("max_batch_seconds must be > 0")

    @classmethod
    def demo(cls, **overrides) -> "AdaptConfig":
        """The embedded CPU demo: the project's pre-trained "small" encoder (`starting_encoder`),
        synthetic `demo` data; 12 epochs x 49 steps of 16 crops of 2 s, ~1.5 min on 2 idle
        cores. A low learning rate, random gain, zero-mean patch filters and the
        reconstruction term keep what the pre-training taught; class-balanced sampling
        gives the 10-clip target classes their share; the spectrum term keeps the
        utterance geometry spectral (utterance kNN 62.4 -> 64.8 with seed 0)."""
        base = cls(lr=1e-4, gain_db=6.0, recon_weight=5.0, spectrum_weight=5.0,
                   zero_mean_patches=True, utt_loss_weight=1.0, balanced=True)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def dcase(cls, **overrides) -> "AdaptConfig":
        """The real run: BEATs base (iter3+) on the DCASE 2026 development + eval train clips,
        one GPU. LoRA on the attention projections, whole clips, both channels, SpecAugment
        and mixup. A starting point; not tuned on the real data here."""
        base = cls(mode="lora", epochs=20, batch_size=32, lr=5e-4, head_lr_mult=2.0,
                   warmup_ratio=0.05, lora_rank=16, lora_alpha=32.0, specaugment=True,
                   mixup=True, crop_seconds=None, channel="both", device="cuda",
                   num_threads=None, amp=True)
        return dataclasses.replace(base, **overrides)

    def fingerprint(self) -> dict:
        """The settings that change the result (device, threads and the memory bound aside),
        for resume checks and the adapted encoder's cache key."""
        d = asdict(self)
        for key in ("device", "num_threads", "max_batch_seconds"):
            d.pop(key)
        return d


# --------------------------------------------------------------------------- data


def micro_batches(lengths: np.ndarray, max_samples: float) -> list[np.ndarray]:
    """Split a batch (clip lengths in samples, (B,)) into groups of row indices whose padded
    size (rows x longest) stays within ``max_samples``: rows sorted by length, a new group
    whenever the next row would overflow (a clip longer than the bound forms its own group).
    One group holding every row when the whole batch fits."""
    lengths = np.asarray(lengths)
    if len(lengths) * lengths.max(initial=0) <= max_samples:
        return [np.arange(len(lengths))]
    groups, current = [], []
    for i in np.argsort(lengths, kind="stable"):
        if current and (len(current) + 1) * lengths[i] > max_samples:
            groups.append(np.array(current))
            current = []
        current.append(int(i))
    groups.append(np.array(current))
    return groups


def load_training_waves(rows: pd.DataFrame, channel: str = "near"
                        ) -> tuple[list[np.ndarray], np.ndarray]:
    """Load clips once into memory -> (waves: list of (N_i,) float32, row (M,) of each wave).

    With channel "both" every stereo clip gives two examples (near, far), rows repeat; a
    mono clip (2023-2025 data) gives its one microphone.
    """
    from asdlib.audio import load_channels, load_clip

    waves, row_of = [], []
    for i, path in enumerate(rows["path"]):
        if channel == "both":
            wave, sr = load_channels(path)
            wave = wave[:2]
        else:
            wave, sr = load_clip(path, channel=channel)
            wave = wave[None]
        if sr != SAMPLE_RATE:  # the loaders resample; a file they cannot is an error
            raise ValueError(f"{path}: sample rate {sr}, expected {SAMPLE_RATE}")
        for w in np.asarray(wave, dtype=np.float32):
            waves.append(np.ascontiguousarray(w))
            row_of.append(i)
    return waves, np.asarray(row_of, dtype=np.int64)


def crop_batch(waves: list[np.ndarray], idx: np.ndarray, crop: int | None,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of ``crop`` samples (shorter clips whole, padded) -> (B, N), (B, N) mask."""
    out = []
    for i in idx:
        w = waves[i]
        if crop is not None and len(w) > crop:
            start = int(rng.integers(0, len(w) - crop + 1))
            w = w[start: start + crop]
        out.append(w)
    return padded_tensors(out)


class FbankMasker:
    """SpecAugment as a forward pre-hook on ``patch_embedding``: zero (= the normalised mean)
    random time and mel bands of its input fbank (B, 1, T, 128). Draws from ``rng``."""

    def __init__(self, cfg: AdaptConfig):
        self.cfg = cfg
        self.rng: np.random.Generator | None = None

    def __call__(self, module, inputs):
        if self.rng is None or not module.training:
            return None
        x = inputs[0].clone()
        b, _, t, f = x.shape
        for i in range(b):
            for _ in range(self.cfg.time_masks):
                w = int(self.rng.integers(0, self.cfg.time_mask_frames + 1))
                s = int(self.rng.integers(0, max(1, t - w + 1)))
                x[i, :, s: s + w, :] = 0.0
            for _ in range(self.cfg.freq_masks):
                w = int(self.rng.integers(0, self.cfg.freq_mask_bins + 1))
                s = int(self.rng.integers(0, max(1, f - w + 1)))
                x[i, :, :, s: s + w] = 0.0
        return (x,) + tuple(inputs[1:])


def mask_grid(grid: torch.Tensor, cfg: AdaptConfig, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment fallback on the token grid (B, T', 8, D): zero a time span and a band."""
    keep = torch.ones(grid.shape[:3], dtype=grid.dtype, device=grid.device)
    t = grid.shape[1]
    for i in range(grid.shape[0]):
        for _ in range(cfg.time_masks):
            w = int(rng.integers(0, max(1, cfg.time_mask_frames // 16) + 1))
            s = int(rng.integers(0, max(1, t - w + 1)))
            keep[i, s: s + w] = 0
        for _ in range(cfg.freq_masks):
            keep[i, :, int(rng.integers(0, 8))] = 0
    return grid * keep[..., None]


# --------------------------------------------------------------------------- training


def lr_schedule(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """Factor of the base learning rate at each step: linear warm-up over ``warmup`` steps,
    then cosine decay to ``min_ratio`` at step ``total`` (for ``LambdaLR``)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def _param_groups(named: list[tuple[str, nn.Parameter]], lr: float, wd: float) -> list[dict]:
    """Decay matrices; no decay for biases, norms, gains and 1-d tensors."""
    decay = [p for n, p in named if p.ndim >= 2 and "norm" not in n]
    plain = [p for n, p in named if not (p.ndim >= 2 and "norm" not in n)]
    return [g for g in ({"params": decay, "lr": lr, "weight_decay": wd},
                        {"params": plain, "lr": lr, "weight_decay": 0.0}) if g["params"]]


@contextlib.contextmanager
def _training_overrides(model: nn.Module, keep_grad_decay: bool):
    """Switch off layerdrop (and the layer-wise gradient decay unless kept) for the run.

    `asdlib.encoder` reads both from attributes of ``model.encoder`` (set from the cfg at
    build time); the cfg itself is not touched, so the saved checkpoint keeps its values.
    """
    enc = getattr(model, "encoder", None)
    changes = {"layerdrop": 0.0}
    if not keep_grad_decay:
        changes["layer_wise_gradient_decay_ratio"] = 1.0
    saved = {k: getattr(enc, k) for k in changes if isinstance(getattr(enc, k, None), (int, float))}
    for k in saved:
        setattr(enc, k, changes[k])
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(enc, k, v)


def _adamw(groups: list[dict]) -> torch.optim.AdamW:
    """AdamW, the fused kernel where this torch build has it (CPU and CUDA: several times
    faster for many small tensors, same arithmetic in every run)."""
    try:
        return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_epoch(seed: int, epoch: int) -> np.random.Generator:
    """Seed every RNG the step uses from (seed, epoch), so a resumed epoch draws the same
    numbers as in an uninterrupted run -> the numpy Generator for batches, crops, masks."""
    s = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
    return np.random.default_rng([seed, epoch, 1])


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def adapt(model: nn.Module, table: pd.DataFrame, cfg: AdaptConfig, out_dir: str | os.PathLike,
          progress: bool = True, *, resume: bool = True,
          waves: tuple[list[np.ndarray], np.ndarray] | None = None,
          callback: Callable[[int, pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Adapt ``model`` (a BEATs encoder, changed in place) on the normal training clips of ``table``.

    Writes ``out_dir/state.pt`` after every epoch and, at the end, ``out_dir/encoder.pt``
    (official BEATs format, LoRA merged) and ``out_dir/heads.pt``. With ``resume`` and an
    existing ``state.pt`` of the same settings, training continues after its last epoch
    (``model`` must then be the same starting encoder). ``waves``: a preloaded
    `load_training_waves(training_rows(table), cfg.channel)`. ``callback(epoch, history)``
    runs after each checkpoint. Returns the history: one row per epoch with epoch, loss,
    acc (ASP proxy accuracy), band_acc, lr (at the epoch's end), seconds.
    """
    from asdlib.encoder import save_beats

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = training_rows(table)
    if len(rows) == 0:
        raise ValueError("no training clips in the table")
    labels, classes = proxy_classes(rows)
    device = resolve_device(cfg.device)
    wave_list, row_of = waves if waves is not None else load_training_waves(rows, cfg.channel)
    if len(row_of) and row_of.max() >= len(rows):
        raise ValueError("waves do not match the training rows of the table")
    y_all = torch.from_numpy(labels[row_of])
    n = len(wave_list)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_ratio * total))
    crop = None if cfg.crop_seconds is None else int(round(cfg.crop_seconds * SAMPLE_RATE))
    dim = int(model.cfg.encoder_embed_dim)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    state_path = out_dir / STATE_FILE
    terms = loss_terms(cfg)
    rank, n_procs = distributed.world()
    progress = progress and rank == 0

    with _threads(cfg.num_threads), torch.random.fork_rng(devices=cuda_devices), \
            _training_overrides(model, cfg.keep_layer_grad_decay):
        torch.manual_seed(cfg.seed)
        heads = TrainingHeads(dim, cfg.emb_dim, len(classes), cfg.arcface_scale,
                              cfg.arcface_margin, cfg.easy_margin)
        set_trainable(model, cfg.mode, cfg.last_n, cfg.lora_rank, cfg.lora_alpha)
        model.to(device)
        heads.to(device)
        distributed.broadcast_parameters(model, heads)
        enc_named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        groups = _param_groups(enc_named, cfg.lr, cfg.weight_decay) + _param_groups(
            list(heads.named_parameters()), cfg.lr * cfg.head_lr_mult, cfg.weight_decay)
        optimizer = _adamw(groups)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(total, warmup, cfg.min_lr_ratio))
        history: list[dict] = []
        start = 0
        if resume and state_path.exists():
            state = torch.load(state_path, map_location=device, weights_only=False)
            if state["config"] != cfg.fingerprint() or state["classes"] != classes \
                    or state["n_examples"] != n:
                raise ValueError(f"{state_path} belongs to other settings or data; "
                                 "use a new out_dir or resume=False")
            model.load_state_dict(state["model"])
            heads.load_state_dict(state["heads"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_states(state["rng"])
            history, start = list(state["history"]), int(state["epoch"])

        masker = FbankMasker(cfg)
        patch = getattr(model, "patch_embedding", None)
        hook = patch.register_forward_pre_hook(masker) \
            if cfg.specaugment and isinstance(patch, nn.Module) else None
        dtype = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
        params = [p for g in optimizer.param_groups for p in g["params"]]
        try:
            for epoch in range(start, cfg.epochs):
                rng = seed_epoch(cfg.seed, epoch)
                # every process must draw the same batches and mixups from rng; the masks
                # of each process's share come from a stream of its own
                mask_rng = rng if n_procs == 1 else np.random.default_rng([cfg.seed, epoch, rank])
                masker.rng = mask_rng
                model.train()
                heads.train()
                t0 = time.perf_counter()
                order = _epoch_order(y_all.numpy(), len(classes), cfg.balanced, rng)
                sums = np.zeros(4)  # loss * b, correct, band correct, examples
                bar = progress_bar(steps_per_epoch, f"adaptation epoch {epoch + 1}/{cfg.epochs}",
                                   "steps", progress)
                for step in range(steps_per_epoch):
                    idx = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
                    wav, pad = crop_batch(wave_list, idx, crop, rng)
                    if cfg.gain_db:
                        wav = random_gain(wav, cfg.gain_db, rng)
                    y = y_all[idx].to(device)
                    lam, y2 = 1.0, y
                    if cfg.mixup and len(idx) > 1:
                        lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
                        perm = torch.from_numpy(rng.permutation(len(idx)))
                        wav = lam * wav + (1.0 - lam) * wav[perm]
                        pad = pad & pad[perm]
                        y2 = y[perm]
                    optimizer.zero_grad(set_to_none=True)
                    loss, c1, c2 = 0.0, 0, 0
                    lengths = (~pad).sum(1).numpy()
                    share = np.arange(rank, len(idx), n_procs)   # this process's examples
                    chunks = [share[c] for c in
                              micro_batches(lengths[share], cfg.max_batch_seconds * SAMPLE_RATE)
                              if len(c)]
                    for rows_c in chunks:
                        keep = torch.from_numpy(rows_c)
                        n_keep = int(lengths[rows_c].max())
                        w, p = wav[keep, :n_keep].to(device), pad[keep, :n_keep].to(device)
                        out = model.extract(w, padding_mask=p if p.any() else None,
                                            layers=(cfg.layer,), dtype=dtype)
                        grid = out.grid(cfg.layer)
                        if cfg.specaugment and hook is None:
                            grid = mask_grid(grid, cfg, mask_rng)
                        batch = Batch(model, heads, w, out.fbank, grid, out.time_valid,
                                      y[keep.to(device)], y2[keep.to(device)], lam)
                        part = total_loss(terms, batch)
                        if len(rows_c) < len(idx):  # batch mean = size-weighted chunk means
                            part = part * (len(rows_c) / len(idx))
                        part.backward()
                        loss += float(part.detach())
                        a1, a2 = proxy_accuracy(batch)
                        c1, c2 = c1 + a1, c2 + a2
                    distributed.sum_gradients(params)
                    loss, c1, c2 = distributed.sum_numbers([loss, c1, c2])
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    if cfg.zero_mean_patches:
                        zero_mean_patch_filters(model)
                    b = len(idx)
                    sums += (loss * b, c1, c2, b)
                    bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}", acc=f"{sums[1] / sums[3]:.2f}")
                    bar.update(1)
                bar.close()
                history.append({"epoch": epoch + 1, "loss": sums[0] / sums[3],
                                "acc": sums[1] / sums[3], "band_acc": sums[2] / sums[3],
                                "lr": optimizer.param_groups[0]["lr"],
                                "seconds": time.perf_counter() - t0})
                left = (cfg.epochs - epoch - 1) * history[-1]["seconds"]
                report(f"adaptation: epoch {epoch + 1}/{cfg.epochs}, loss {history[-1]['loss']:.3f}, "
                       f"proxy accuracy {history[-1]['acc']:.2f}, {history[-1]['seconds']:.0f} s, "
                       f"about {left / 60:.1f} min left")
                if rank == 0:
                    atomic.torch_save({"model": model.state_dict(), "heads": heads.state_dict(),
                                       "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                       "rng": _rng_states(), "history": history,
                                       "config": cfg.fingerprint(), "classes": classes,
                                       "n_examples": n}, state_path)
                distributed.barrier()
                if callback is not None:
                    callback(epoch + 1, pd.DataFrame(history))
        finally:
            if hook is not None:
                hook.remove()
        model.eval()
        heads.eval()
        if cfg.mode == "lora":
            merge_lora(model)
        for p in model.parameters():
            p.requires_grad_(True)

    if rank == 0:
        save_beats(model, out_dir / ENCODER_FILE)  # atomic itself
        save_heads(out_dir / HEADS_FILE, heads.asp, heads.band, cfg.layer, classes=classes,
                   adapt_config=asdict(cfg))
        atomic.write_text(out_dir / "history.json", json.dumps(history, indent=1))
    distributed.barrier()
    return pd.DataFrame(history, columns=["epoch", "loss", "acc", "band_acc", "lr", "seconds"])


def _epoch_order(labels: np.ndarray, n_classes: int, balanced: bool,
                 rng: np.random.Generator) -> np.ndarray:
    """The examples of one epoch, in order: a permutation, or with ``balanced`` a draw with
    replacement in which every class is equally likely."""
    n = len(labels)
    if not balanced:
        return rng.permutation(n)
    counts = np.bincount(labels, minlength=n_classes)
    p = 1.0 / counts[labels]
    return rng.choice(n, size=n, replace=True, p=p / p.sum())



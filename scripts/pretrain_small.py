"""Pre-train the "small" BEATs on the project's own synthetic data -> ``asdlib/assets/``.

Why: the embedded default has no pre-trained BEATs, and a randomly initialised "small"
encoder is a poor start. This script plays the role of BEATs' pre-training:
self-supervised (targets computed from the audio, no labels), on data disjoint from the
evaluation data. Measured on `demo` seed 0 (near channel; utterance kNN = cosine 1-NN of
the mean final-layer token, official hmean %): random init 50.4; the first asset (masked
patches + level read-out) 56.6; this asset 62.4; mean log-mel kNN 65.5.

Objective (the defaults made the shipped asset):
- masked patch reconstruction, in the spirit of BEATs' masked prediction with the
  normalised fbank patch as target instead of tokenizer labels: 60 % of the patch tokens
  are replaced by a learned mask vector after the patch projection, and a linear predictor
  on the final-layer tokens regresses the 16 x 16 patch of every token, masked ones
  (weight 1) and visible ones (``--visible``, weight 1). Without the visible term the
  final layer specialises in predicting its neighbours and its mean token scored 58.1;
- a read-out: a linear map of the mean final-layer token must give the crop's mean
  normalised fbank (128,) (``--summary`` 10), so the utterance vector keeps the spectrum;
- random gain of +-6 dB per crop with level-free targets (each crop's mean subtracted),
  and zero-mean patch-embedding filters (projected after every step): BEATs' bias-free
  patch embedding then describes each patch's shape, not its level, which otherwise
  dominates every token (measured: the random-gain + zero-mean changes took the mean
  first-layer token from 57.2 to 65.3).
Mask vector, predictor and read-out are dropped at the end; the result is a plain BEATs
"small" checkpoint (official format, float16 tensors, 3.2 MB).

Data: the NORMAL TRAINING clips (near channel) of the synthetic ``demo`` preset generated
with seeds 1 and 2 (`asdlib.synth.generate_dataset`, generator version 2): 1,540 clips of
6 s. The evaluation data is seed 0. No labels, no anomalous clip, no seed-0 clip is used.
Init ``build_beats("small", seed=0)``, 16 epochs, AdamW lr 1e-3, batch 16 crops of 2 s:
about 4 min on 2 idle CPU cores (+ 2 x 1 min to generate the data); deterministic for a
fixed thread count (2 made the asset). The asset was made before this script dropped an
unused contrastive head and switched to the shared `random_gain` (float64 gains): both
change random draws, so a rerun now gives an equivalent encoder, not the same bytes.

Usage::

    PYTHONPATH=. python scripts/pretrain_small.py --threads 2 [--work /tmp/pretrain_small]
        [--out asdlib/assets/beats_small_synth.pt]

writes the checkpoint and ``<out>.json`` (settings, data, per-epoch loss).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asdlib.adaptation import training
from asdlib.adaptation import small_encoder as small
from asdlib.audio import CHANNELS, SAMPLE_RATE
from asdlib.data import scan_dataset
from asdlib.encoder import build_beats, load_beats, save_beats

PATCH = 16


class _Masker:
    """Forward hook on the last module of the patch front end: masked tokens -> mask vector."""

    def __init__(self, dim: int):
        self.vector = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.vector, std=0.02)
        self.mask: torch.Tensor | None = None  # (B, L) bool

    def __call__(self, module, inputs, output):
        if self.mask is None:
            return None
        return torch.where(self.mask[..., None], self.vector.to(output.dtype), output)


def pretrain_small(roots: list[str | Path], out_path: str | Path, *, config: str = "small",
                   epochs: int = 12, batch_size: int = 16, lr: float = 1e-3,
                   weight_decay: float = 0.01, mask_ratio: float = 0.6,
                   crop_seconds: float = 2.0,
                   mae_weight: float = 1.0, summary_weight: float = 0.0, gain_db: float = 0.0,
                   zero_mean: bool = False, visible_weight: float = 0.0, seed: int = 0,
                   num_threads: int | None = None, channel: str = "near",
                   progress: bool = True) -> list[dict]:
    """Self-supervised pre-training of a fresh ``build_beats(config, seed)`` on the normal
    training clips under ``roots`` -> per-epoch history; writes the float16 checkpoint to
    ``out_path``.

    Loss = mae_weight * masked-patch MSE + summary_weight * MSE of a linear read-out of that mean token against the crop's mean
    normalised fbank (128,): BEATs' bias-free patch embedding followed by a per-token
    LayerNorm hides each patch's level, and this term makes the utterance vector carry the
    band levels again; + visible_weight * the same patch MSE on the unmasked tokens.
    gain_db: random gain per crop (targets are level-free either way: each crop's mean is
    subtracted). zero_mean: patch filters projected to zero mean at init and every step.
    channel: "near" | "far" | "both", as `asdlib.adaptation.training.load_training_waves` (both: each clip
    gives two examples; doubling the corpus this way lowered the utterance kNN: README).
    AdamW, 5 % warm-up + cosine, random crops of ``crop_seconds``; crops and token masks are
    drawn from a generator seeded by (seed, epoch). Deterministic on CPU for fixed threads.
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    waves: list[np.ndarray] = []
    for root in roots:
        rows = training.training_rows(scan_dataset(root))
        waves += training.load_training_waves(rows, channel)[0]
    model = build_beats(config, seed=seed)
    if zero_mean:
        small.zero_mean_patch_filters(model)
    torch.manual_seed(seed)
    dim = model.cfg.encoder_embed_dim
    masker = _Masker(dim)
    front = model.post_extract_proj if model.post_extract_proj is not None else model.layer_norm
    hook = front.register_forward_hook(masker)
    predictor = nn.Linear(dim, PATCH * PATCH)
    summary = nn.Linear(dim, 128)
    params = [p for p in model.parameters()] + [masker.vector] + list(predictor.parameters()) \
        + list(summary.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    steps = math.ceil(len(waves) / batch_size)
    total = steps * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, training.lr_schedule(total, max(1, int(0.05 * total)), 0.01))
    crop = int(crop_seconds * SAMPLE_RATE)
    history = []
    model.train()
    for epoch in range(epochs):
        rng = training.seed_epoch(seed, epoch)
        order = rng.permutation(len(waves))
        t0, loss_sum = time.perf_counter(), 0.0
        for step in range(steps):
            idx = order[step * batch_size: (step + 1) * batch_size]
            wav, pad = training.crop_batch(waves, idx, crop, rng)
            if pad.any():
                raise ValueError("pre-training expects clips at least crop_seconds long")
            if gain_db:
                wav = small.random_gain(wav, gain_db, rng)
            target = small.fbank_patches(model, wav).flatten(1, 2)  # (B, L, 256), level-free
            b, n_tok = target.shape[:2]
            mask = torch.from_numpy(rng.random((b, n_tok)) < mask_ratio)
            masker.mask = mask if mae_weight else None
            tokens = model.extract(wav, layers=(-1,)).tokens[-1]  # (B, L, D)
            masker.mask = None
            loss = torch.zeros(())
            if mae_weight:
                err = ((predictor(tokens) - target) ** 2).mean(-1)  # (B, L)
                loss = loss + mae_weight * (err * mask).sum() / mask.sum().clamp_min(1)
                if visible_weight:
                    loss = loss + visible_weight * (err * ~mask).sum() / (~mask).sum().clamp_min(1)
            if summary_weight:
                level = small.mean_spectrum(target.reshape(b, n_tok // 8, 8, PATCH * PATCH))
                loss = loss + summary_weight * ((summary(tokens.mean(1)) - level) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            if zero_mean:
                small.zero_mean_patch_filters(model)
            loss_sum += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch + 1, "examples": len(waves),
                        "loss": loss_sum / len(waves), "seconds": time.perf_counter() - t0})
        if progress:
            print(json.dumps(history[-1]), flush=True)
    hook.remove()
    model.eval()
    out_path = Path(out_path)
    save_beats(model, out_path)
    ckpt = torch.load(out_path, weights_only=True)
    ckpt["model"] = {k: v.half() for k, v in ckpt["model"].items()}
    torch.save(ckpt, out_path)
    load_beats(out_path)  # must load strictly as a plain BEATs checkpoint
    return history


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/pretrain_small", help="synthetic data folder")
    ap.add_argument("--out", default=str(small.SMALL_ASSET))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mask-ratio", type=float, default=0.6)
    ap.add_argument("--mae", type=float, default=1.0, help="weight of the masked-patch loss")
    ap.add_argument("--summary", type=float, default=10.0, help="weight of the level read-out")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gain-db", type=float, default=6.0, help="random gain range (dB)")
    ap.add_argument("--no-zero-mean", dest="zero_mean", action="store_false",
                    help="let patch filters have a mean (they carry the patch level then)")
    ap.add_argument("--channel", default="near", choices=CHANNELS,
                    help="microphone(s) whose clips form the pre-training corpus")
    ap.add_argument("--visible", type=float, default=1.0,
                    help="weight of reconstructing the visible (unmasked) patches")
    args = ap.parse_args(argv)
    from asdlib.synth import ensure_dataset

    roots = [ensure_dataset(Path(args.work) / f"demo_seed{s}", "demo", seed=s) for s in args.seeds]
    hist = pretrain_small(roots, args.out, epochs=args.epochs, lr=args.lr,
                          mask_ratio=args.mask_ratio, num_threads=args.threads,
                          mae_weight=args.mae,
                          summary_weight=args.summary, gain_db=args.gain_db,
                          zero_mean=args.zero_mean, visible_weight=args.visible,
                          channel=args.channel)
    from asdlib.synth import GENERATOR_VERSION

    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"seeds": args.seeds, "preset": "demo",
         "clips": f"normal train, {args.channel} channel",
         "generator_version": GENERATOR_VERSION, "config": "small", "init_seed": 0,
         "threads": torch.get_num_threads(),
         "epochs": args.epochs, "lr": args.lr, "mask_ratio": args.mask_ratio,
         "mae_weight": args.mae,
         "summary_weight": args.summary, "gain_db": args.gain_db, "zero_mean": args.zero_mean,
         "visible_weight": args.visible, "channel": args.channel,
         "history": hist}, indent=1))


if __name__ == "__main__":
    main()

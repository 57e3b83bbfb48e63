"""Encoder throughput against the machine's own matmul rate (a script, not a test).

Runs the "base" BEATs config (official 12 x 768 architecture, random weights) on batches
of 10 s clips, in float32 and under bfloat16 autocast, plus the "small" config, and
prints seconds per clip, achieved GFLOP/s and the ratio to a plain 2048^3 float32 matmul
measured in the same run (the CPU target is >= 0.65; the official code reaches ~0.45).

    PYTHONPATH=. python benchmarks/bench_encoder.py --threads 2 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def forward_flops(cfg, n_samples: int) -> float:
    """FLOPs (2 x multiply-accumulates) of one clip's forward pass through all layers."""
    n_time = (1 + (n_samples - 400) // 160) // 16
    tokens = n_time * 8
    dim, ffn = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
    macs = tokens * cfg.embed_dim * 16 * 16  # patch embedding
    if cfg.embed_dim != dim:
        macs += tokens * cfg.embed_dim * dim  # post_extract_proj
    macs += tokens * dim * (dim // cfg.conv_pos_groups) * cfg.conv_pos  # pos_conv
    per_layer = 4 * tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * ffn
    macs += cfg.encoder_layers * per_layer
    return 2.0 * macs


def time_once(fn) -> float:
    """Wall time of one fn() call (synchronising CUDA)."""
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_matmul(device: str, size: int = 2048):
    """A closure running one plain float32 size^3 matmul, and its FLOPs."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return (lambda: a @ b), 2.0 * size**3


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run the measurements, print the table."""
    from asdlib.encoder import build_beats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="10 s clips per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each runs every case once)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = args.device
    n_samples = int(args.seconds * 16000)
    generator = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(args.batch, n_samples, generator=generator)).clamp(-1, 1).to(device)

    matmul, matmul_flops = make_matmul(device)
    base = build_beats("base", seed=0, device=device)
    small = build_beats("small", seed=0, device=device)
    tiny = build_beats("tiny", seed=0, device=device)
    flops = forward_flops(base.cfg, n_samples)
    small_flops = forward_flops(small.cfg, n_samples)
    wav_6s = wav[:, :96000]
    cases = {
        "matmul": lambda: [matmul() for _ in range(4)],
        "fp32": lambda: base.extract(wav),
        "bf16": lambda: base.extract(wav, dtype=torch.bfloat16),
        "small": lambda: small.extract(wav),
        "small_bf16": lambda: small.extract(wav, dtype=torch.bfloat16),
        "small_6s": lambda: small.extract(wav_6s),
        "tiny": lambda: tiny.extract(wav),
        "tiny_bf16": lambda: tiny.extract(wav, dtype=torch.bfloat16),
    }
    # Rounds interleave every case, so a machine whose load changes over time affects all
    # of them alike; the matmul is timed right before each encoder run.
    times: dict[str, list[float]] = {name: [] for name in cases}
    ratios = []
    with torch.inference_mode():
        warm = {name: fn() for name, fn in cases.items()}  # warm-up; fp32 / bf16 outputs kept
        for _ in range(args.repeats):
            for name, fn in cases.items():
                times[name].append(time_once(fn))
            matmul_rate = 4 * matmul_flops / times["matmul"][-1]
            ratios.append(flops * args.batch / times["fp32"][-1] / matmul_rate)
    def rms_dev(full, half):
        a, b = warm[full].tokens[-1], warm[half].tokens[-1]
        return ((b - a).norm() / a.norm()).item()

    reference, bf16_tokens = warm["fp32"].tokens[-1], warm["bf16"].tokens[-1]
    deviation = (bf16_tokens - reference).abs()
    max_abs = deviation.max().item()
    rel_max = max_abs / reference.abs().max().item()
    rel_rms = (deviation.norm() / reference.norm()).item()

    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    per_clip = {name: value / args.batch for name, value in median.items()}
    matmul_rate = 4 * matmul_flops / median["matmul"] / 1e9
    rate = flops / per_clip["fp32"] / 1e9
    best_ratio = (flops * args.batch / best["fp32"]) / (4 * matmul_flops / best["matmul"])
    rows = [
        ("device / threads / batch", f"{device} / {args.threads} / {args.batch} x {args.seconds:g} s clips, "
                                     f"median of {args.repeats} rounds"),
        ("matmul 2048^3 fp32 GFLOP/s", f"{matmul_rate:.1f} (rounds: "
                                       + ", ".join(f"{4 * matmul_flops / t / 1e9:.0f}" for t in times["matmul"]) + ")"),
        ("base GFLOP per clip", f"{flops / 1e9:.1f}"),
        ("base fp32 s/clip", f"{per_clip['fp32']:.3f}"),
        ("base fp32 GFLOP/s", f"{rate:.1f}"),
        ("base fp32 ratio to matmul", f"{rate / matmul_rate:.2f} (per round: "
                                      + ", ".join(f"{r:.2f}" for r in ratios) + f"; best/best {best_ratio:.2f})"),
        ("base bf16 s/clip", f"{per_clip['bf16']:.3f}"),
        ("base bf16 speed-up vs fp32", f"{per_clip['fp32'] / per_clip['bf16']:.2f}x"),
        ("bf16 max abs dev (final tokens)", f"{max_abs:.3g}"),
        ("bf16 max abs dev / max |fp32|", f"{rel_max:.3g}"),
        ("bf16 rms dev / rms fp32", f"{rel_rms:.3g}"),
        ("small GFLOP per clip", f"{small_flops / 1e9:.2f} ({args.seconds:g} s), "
                                 f"{forward_flops(small.cfg, 96000) / 1e9:.2f} (6 s)"),
        ("small fp32 s/clip", f"{per_clip['small']:.4f} ({args.seconds:g} s), {per_clip['small_6s']:.4f} (6 s)"),
        ("small bf16 s/clip, speed-up, rms dev", f"{per_clip['small_bf16']:.4f}, "
         f"{per_clip['small'] / per_clip['small_bf16']:.2f}x, {rms_dev('small', 'small_bf16'):.3g}"),
        ("tiny fp32 / bf16 s/clip, rms dev", f"{per_clip['tiny']:.4f} / {per_clip['tiny_bf16']:.4f}, "
         f"{rms_dev('tiny', 'tiny_bf16'):.3g}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 30}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()

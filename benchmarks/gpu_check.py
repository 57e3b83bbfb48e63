"""GPU readiness in one prepared script: parity of the CUDA paths with the CPU, and their speed.

On a CUDA machine it checks, with random weights and features (nothing to download):
- the encoder (BEATs base): CPU float32 against CUDA float32, and bfloat16 against float32
  on each device, at every hidden state (relative rms error);
- every scoring branch: CPU against CUDA (torch backend), on a small random bank;
and times, at DCASE size:
- extraction with the base encoder (float32 and bfloat16), clips per second;
- one adaptation step of the GPU recipe (LoRA, bfloat16 autocast, whole 10 s clips);
- every branch on one machine's bank (1000 clips x 62 x 8 tokens, 200 test clips);
- the embedded demo's extraction and scoring end to end (small encoder; generated here).
Each part is timed against the device's own bfloat16 / float32 matrix-product rate,
measured in the same run. One JSON is written (``--out``), after every part, so a run cut
short keeps what it measured.

    python benchmarks/gpu_check.py --out gpu_check.json            # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out x.json  # what CI can run

``--quick`` shrinks every size (a smoke run of the same code).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeat: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def host_facts(device: str) -> dict:
    facts = {"python": platform.python_version(), "torch": torch.__version__,
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as handle:
            facts["cpu"] = next(line.split(":", 1)[1].strip() for line in handle
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return facts


def matmul_rates(device: str, n: int) -> dict:
    """TFLOP/s of an n^3 matrix product in float32 and bfloat16 on the device."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = _timed(lambda: a @ b, device)
        out[str(dtype).replace("torch.", "")] = round(2 * n ** 3 / seconds / 1e12, 2)
    return out


def encoder_parity(device: str, config: str, seconds: float) -> dict:
    """Relative rms error per hidden state: CPU vs device (float32), bfloat16 vs float32."""
    from asdlib.encoder import build_beats

    model = build_beats(config, seed=0).eval()
    wav = torch.randn(2, int(seconds * 16000), generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        cpu32 = model.extract(wav, layers="all", embed=True)
        cpu16 = model.extract(wav, layers="all", embed=True, dtype=torch.bfloat16)
        model.to(device)
        dev32 = model.extract(wav.to(device), layers="all", embed=True)
        dev16 = model.extract(wav.to(device), layers="all", embed=True, dtype=torch.bfloat16)
    layers = sorted(cpu32.tokens)
    return {
        "cpu_vs_device_fp32": {str(i): _rel(dev32.tokens[i], cpu32.tokens[i]) for i in layers},
        "device_bf16_vs_fp32": {str(i): _rel(dev16.tokens[i], dev32.tokens[i]) for i in layers},
        "cpu_bf16_vs_fp32": {str(i): _rel(cpu16.tokens[i], cpu32.tokens[i]) for i in layers},
        "embed_cpu_vs_device": _rel(dev32.embed, cpu32.embed),
    }


def encoder_speed(device: str, config: str, batch: int, seconds: float) -> dict:
    from asdlib.encoder import build_beats

    model = build_beats(config, seed=0).eval().to(device)
    wav = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        with torch.inference_mode():
            t = _timed(lambda: model.extract(wav, layers=(-1,), embed=True, dtype=dtype), device)
        out[f"{name}_clips_per_s"] = round(batch / t, 1)
    return out


def adaptation_step(device: str, config: str, batch: int, seconds: float) -> dict:
    """Seconds per step of the GPU recipe's inner loop (LoRA, bf16 autocast on CUDA)."""
    from asdlib.adaptation import losses, lora, training
    from asdlib.encoder import build_beats

    cfg = training.AdaptConfig.dcase(device=device)
    model = build_beats(config, seed=0)
    lora.set_trainable(model, cfg.mode, cfg.last_n, cfg.lora_rank, cfg.lora_alpha)
    model.to(device).train()
    heads = losses.TrainingHeads(model.cfg.encoder_embed_dim, cfg.emb_dim, 50, cfg.arcface_scale,
                                 cfg.arcface_margin, cfg.easy_margin).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    terms = losses.loss_terms(cfg)
    wav = torch.randn(batch, int(seconds * 16000), device=device) * 0.1
    y = torch.randint(0, 50, (batch,), device=device)
    dtype = torch.bfloat16 if device.startswith("cuda") else None

    def step():
        out = model.extract(wav, layers=(cfg.layer,), dtype=dtype)
        b = losses.Batch(model, heads, wav, out.fbank, out.grid(cfg.layer), out.time_valid, y, y, 1.0)
        loss = losses.total_loss(terms, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = _timed(step, device, repeat=3)
    res = {"seconds_per_step": round(t, 3), "batch": batch, "clip_seconds": seconds}
    if device.startswith("cuda"):
        res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def _random_features(rng, n: int, t: int, d: int, n_target: int):
    from asdlib.features import ClipFeatures

    base = rng.standard_normal((1, 1, 8, d)).astype(np.float32)
    tok = (base + 0.8 * rng.standard_normal((n, t, 8, d)).astype(np.float32)).astype(np.float16)
    n_time = np.full(n, t)
    return ClipFeatures(tokens=tok, n_time=n_time, utt=tok.astype(np.float32).mean((1, 2)),
                        asp=rng.standard_normal((n, 128)).astype(np.float32),
                        band_att=rng.standard_normal((n, 8, d)).astype(np.float32),
                        domain=np.array(["source"] * (n - n_target) + ["target"] * n_target, dtype=object),
                        names=np.array([f"c{i}.wav" for i in range(n)], dtype=object))


def branch_parity(device: str) -> dict:
    """Max |score difference| of every branch, CPU against the device (torch backend)."""
    from asdlib.branches import BRANCHES, make_branch

    rng = np.random.default_rng(0)
    bank, test = _random_features(rng, 40, 12, 64, 8), _random_features(rng, 10, 12, 64, 3)
    out = {}
    for name in BRANCHES:
        a = make_branch(name, backend="torch", device="cpu").fit(bank)
        b = make_branch(name, backend="torch", device=device).fit(bank)
        diff = max(float(np.nanmax(np.abs(a.score(test).scores - b.score(test).scores))),
                   float(np.nanmax(np.abs(a.self_scores() - b.self_scores()))))
        out[name] = diff
    return out


def branch_speed(device: str, n_bank: int, n_test: int, t: int, d_final: int, d_embed: int) -> dict:
    """Seconds per branch on one machine (fit + score + self-scores)."""
    from asdlib.branches import BRANCHES, make_branch

    rng = np.random.default_rng(1)
    final = (_random_features(rng, n_bank, t, d_final, 10),
             _random_features(rng, n_test, t, d_final, n_test // 2))
    embed = (_random_features(rng, n_bank, t, d_embed, 10),
             _random_features(rng, n_test, t, d_embed, n_test // 2))
    backend = "torch" if device.startswith("cuda") else "faiss"
    out = {}
    for name in BRANCHES:
        bank, test = embed if name.startswith("fine") else final
        t0 = time.perf_counter()
        branch = make_branch(name, backend=backend, device=device).fit(bank)
        branch.score(test)
        branch.self_scores()
        _sync(device)
        out[name] = round(time.perf_counter() - t0, 2)
    return out


def demo_end_to_end(device: str, preset: str, work: Path) -> dict:
    """Generate the synthetic set, extract every clip with the shipped small encoder and
    score every branch of notebooks 03-05 on the device: wall seconds per stage."""
    from asdlib import experiment, features, scoring, synth
    from asdlib.adaptation.small_encoder import starting_encoder

    t0 = time.perf_counter()
    root = synth.ensure_dataset(work / f"synth_{preset}", preset, seed=0, progress=False)
    config = experiment.RunConfig(run="gpu-check", data_root=str(root), device=device)
    table = experiment.clip_table(config, root)
    t_data = time.perf_counter() - t0
    cfg = experiment.extract_config(config)
    t0 = time.perf_counter()
    store = features.extract_features(table, starting_encoder("small"), None, cfg,
                                      work / "features", progress=False)
    t_extract = time.perf_counter() - t0
    backend = {"backend": "torch", "device": device} if device.startswith("cuda") else {}
    specs = [scoring.BranchSpec(s.branch, {**s.params, **backend}, s.label, s.layer)
             for s in scoring.SUBBAND_SPECS + scoring.PATCH_SPECS + scoring.LDN_SPECS
             if s.branch != "asp_knn" and s.branch != "subband3"]  # no heads here
    t0 = time.perf_counter()
    scoring.score_run(store, table, specs, progress=False)
    t_score = time.perf_counter() - t0
    return {"clips": len(table), "data_s": round(t_data, 1), "extract_s": round(t_extract, 1),
            "score_s": round(t_score, 1), "extract_and_score_s": round(t_extract + t_score, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--work", default="/tmp/gpu_check")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to leave out")
    args = ap.parse_args(argv)
    device, quick = args.device, args.quick
    torch.manual_seed(0)
    report: dict = {"host": host_facts(device), "quick": quick, "parts": {}}
    sizes = dict(config="tiny" if quick else "base", seconds=2.0 if quick else 10.0,
                 batch=2 if quick else 16)
    parts = {
        "matmul_tflops": lambda: matmul_rates(device, 256 if quick else 8192),
        "encoder_parity": lambda: encoder_parity(device, sizes["config"], 3.0),
        "encoder_speed": lambda: encoder_speed(device, sizes["config"], sizes["batch"], sizes["seconds"]),
        "adaptation_step": lambda: adaptation_step(device, sizes["config"], sizes["batch"], sizes["seconds"]),
        "branch_parity": lambda: branch_parity(device),
        "branch_speed_dcase": lambda: branch_speed(device, 20 if quick else 1000, 5 if quick else 200,
                                                   6 if quick else 62, 32 if quick else 768,
                                                   16 if quick else 512),
        "demo_end_to_end": lambda: demo_end_to_end(device, "tiny" if quick else "demo", Path(args.work)),
    }
    out = Path(args.out)
    for name, fn in parts.items():
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        try:
            report["parts"][name] = {"result": fn(), "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # keep going: one JSON with every part's outcome
            report["parts"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                     "trace": traceback.format_exc()[-2000:]}
        out.write_text(json.dumps(report, indent=1))
        print(name, json.dumps(report["parts"][name])[:400], flush=True)


if __name__ == "__main__":
    main()

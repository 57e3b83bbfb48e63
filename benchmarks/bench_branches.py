"""Benchmark of the scoring branches on a DCASE-sized machine with random features.

Machine: 1000 bank clips (990 source + 10 target) and 200 test clips, T' = 62 time
patches x 8 bands x D = 768, float16 storage (like the feature store), float32 compute.
The data is generated once (float16 .npy files, memory-mapped by the cases). Each case
runs in its own subprocess, so its peak memory (VmHWM, the peak resident set size, which
sees faiss / BLAS allocations, unlike tracemalloc) is its own. Reported per case: fit, score and total
wall seconds, CPU seconds, peak RSS and, for the fine-grained branches, the effective
GFLOP/s (2*M*N*D per distance matrix searched) against a plain float32 matmul measured
in the same process (wall-clock and per CPU-second: on a shared machine the CPU-second
ratio is the fair efficiency measure).

    python benchmarks/bench_branches.py                 # everything, full scale
    python benchmarks/bench_branches.py --scale 0.1     # quick check
    python benchmarks/bench_branches.py --cases fine_ldn --scale 1
    python benchmarks/bench_branches.py --coreset-quality

Goals (2 cores): fine-grained with LDN on the full bank < 8 min and < 6 GiB at >= 0.6 of
the matmul rate; with a 10 % coreset < 1 min; all other branches together < 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from bench_common import peak_rss_gib, status_gib  # noqa: E402

CLIP_BRANCHES = ["utt_knn", "asp_knn", "band_knn", "beam_mean", "beam_max", "adabeam", "subband3"]

# name -> list of (branch, params) fitted on the same bank inside one process
CASES: dict[str, list[tuple[str, dict]]] = {
    **{b: [(b, {})] for b in CLIP_BRANCHES},
    **{f"{b}+ldn": [(b, {"ldn": True})] for b in CLIP_BRANCHES},
    "fine_ldn": [("fine_broad", {}), ("fine_selective", {})],
    "fine_coreset10": [("fine_broad", {"coreset": 0.1}), ("fine_selective", {"coreset": 0.1})],
    "fine_coreset10_nself200": [("fine_broad", {"coreset": 0.1, "n_self": 200}),
                                ("fine_selective", {"coreset": 0.1, "n_self": 200})],
}
DEFAULT_CASES = CLIP_BRANCHES + [f"{b}+ldn" for b in CLIP_BRANCHES] + [
    "fine_coreset10", "fine_coreset10_nself200", "fine_ldn"]


def make_machine(n_bank: int, n_test: int, t: int = 62, d: int = 768, n_target: int = 10,
                 seed: int = 0):
    """Random (bank, test) ClipFeatures with structure: operating states, a smooth time
    pattern and noise per token; float16 tokens, generated in chunks (bounded memory)."""
    from asdlib.features import ClipFeatures

    rng = np.random.default_rng(seed)
    common = rng.standard_normal((8, d)).astype(np.float32) * 1.5
    states = rng.standard_normal((24, 8, d)).astype(np.float32)
    motifs = rng.standard_normal((6, t, 8, d)).astype(np.float32) * 0.6
    target_shift = rng.standard_normal((8, d)).astype(np.float32) * 0.8

    def build(n, n_tgt, anomalous):
        tok = np.empty((n, t, 8, d), dtype=np.float16)
        n_time = np.full(n, t)
        n_time[rng.random(n) < 0.1] = rng.integers(t // 2, t, 1)[0]
        domain = np.array(["source"] * (n - n_tgt) + ["target"] * n_tgt, dtype=object)
        for s in range(0, n, 32):
            e = min(n, s + 32)
            st = rng.integers(0, len(states), e - s)
            mo = rng.integers(0, len(motifs), e - s)
            x = common + states[st][:, None] + motifs[mo] + rng.standard_normal((e - s, t, 8, d), dtype=np.float32)
            x[domain[s:e] == "target"] += target_shift
            if anomalous:
                for i in range(e - s):
                    if (s + i) % 2:
                        x[i, rng.integers(0, t, 6), rng.integers(0, 8)] += 3.0 * rng.standard_normal(d)
            for i in range(e - s):
                x[i, n_time[s + i]:] = 0
            tok[s:e] = x
        valid = (np.arange(t)[None, :] < n_time[:, None])[:, :, None, None]
        utt = np.stack([(tok[i].astype(np.float32) * valid[i]).sum((0, 1)) / (8 * n_time[i])
                        for i in range(n)])
        return ClipFeatures(
            tokens=tok, n_time=n_time, utt=utt,
            asp=(utt[:, :256] + 0.1 * rng.standard_normal((n, 256))).astype(np.float32),
            band_att=tok[:, : t // 2].astype(np.float32).mean(1),
            domain=domain, names=np.array([f"clip_{i:04d}.wav" for i in range(n)]))

    return build(n_bank, n_target, False), build(n_test, n_test // 2, True)


_FIELDS = ("tokens", "n_time", "utt", "asp", "band_att", "domain", "names")


def save_machine(folder: str, scale: float) -> None:
    """Generate the machine once and store it as .npy files (children memory-map them)."""
    n_bank, n_test = max(20, round(1000 * scale)), max(4, round(200 * scale))
    bank, test = make_machine(n_bank, n_test, n_target=max(2, round(10 * scale)))
    for split, f in (("bank", bank), ("test", test)):
        for field in _FIELDS:
            value = getattr(f, field)
            if field in ("domain", "names"):
                value = value.astype(str)
            np.save(os.path.join(folder, f"{split}_{field}.npy"), value)


def load_machine(folder: str):
    """(bank, test) ClipFeatures; tokens memory-mapped (float16, read on use)."""
    from asdlib.features import ClipFeatures

    def load(split):
        get = lambda field, mm=None: np.load(os.path.join(folder, f"{split}_{field}.npy"), mmap_mode=mm)  # noqa: E731
        return ClipFeatures(tokens=get("tokens", "r"), n_time=get("n_time"), utt=get("utt"),
                            asp=get("asp"), band_att=get("band_att"),
                            domain=get("domain").astype(object), names=get("names"))

    return load("bank"), load("test")


def matmul_rate(repeats: int = 3) -> tuple[float, float]:
    """Float32 matmul rate of (4096, 768) x (768, 16384) with numpy BLAS: best wall-clock
    GFLOP/s and GFLOP per CPU-second (the latter is insensitive to other processes)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, 768), dtype=np.float32)
    b = rng.standard_normal((16384, 768), dtype=np.float32)
    best_wall = best_cpu = 0.0
    flop = 2 * 4096 * 16384 * 768 / 1e9
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b.T
        best_wall = max(best_wall, flop / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, flop / (time.process_time() - c0))
    return best_wall, best_cpu


def fine_gflop(scorer, n_test_tokens: int, d: int) -> float:
    """Distance-matrix FLOPs of a fitted FinePatchScorer plus one test set (2*M*N*D each)."""
    total = 0.0
    n_valid = len(scorer._clip_of)
    self_tokens = int(np.isin(scorer._clip_of, scorer.self_clips).sum())
    for n_b in scorer.n_bank_tokens:
        total += 2.0 * n_b * n_b * d                                    # densities (+ self)
        if n_b != n_valid:                                              # coreset: self pass
            total += 2.0 * self_tokens * n_b * d
        total += 2.0 * n_test_tokens * n_b * d                          # test tokens
    return total / 1e9


def run_child(case: str, folder: str) -> dict:
    from asdlib.branches import make_branch

    bank, test = load_machine(folder)
    rate_wall, rate_cpu = matmul_rate()
    rss_data = status_gib("VmRSS")
    out = {"case": case, "n_bank": len(bank), "n_test": len(test), "rss_before_gib": rss_data,
           "matmul_wall": rate_wall, "matmul_cpu": rate_cpu, "branches": []}
    keep = []
    t_case, c_case = time.perf_counter(), time.process_time()
    for name, params in CASES[case]:
        branch = make_branch(name, **params)
        t0, c0 = time.perf_counter(), time.process_time()
        branch.fit(bank)
        t1 = time.perf_counter()
        res = branch.score(test)
        t2 = time.perf_counter()
        own = branch.self_scores()
        t3, c3 = time.perf_counter(), time.process_time()
        row = {"branch": name, "params": params, "fit_s": t1 - t0, "score_s": t2 - t1,
               "self_s": t3 - t2, "cpu_s": c3 - c0, "finite_self": int(np.isfinite(own).sum()),
               "mean_score": float(np.nanmean(res.scores))}
        if name.startswith("fine"):
            n_tok = int(test.n_time.sum())
            row["gflop"] = fine_gflop(branch.scorer, n_tok, bank.tokens.shape[3])
            row["bank_tokens_per_band"] = int(np.mean(branch.scorer.n_bank_tokens))
        out["branches"].append(row)
        keep.append(branch)   # fine branches share one scorer: keep the first alive
    out["total_s"] = time.perf_counter() - t_case
    out["total_cpu_s"] = time.process_time() - c_case
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def coreset_quality(scale: float) -> list[dict]:
    """Greedy 10 % coreset of one band's tokens (``200 * scale`` clips): time and covering
    radius (cosine distance of every token to its nearest centre: max and mean) per
    projection dim (full dims only up to 20k tokens), against a random subset. Two data
    sets: the benchmark machine (noise-dominated) and clustered tokens with Zipf-sized
    modes (rare normal modes: what k-centre is for)."""
    from asdlib.knn import greedy_coreset, knn_search, l2_normalize

    n_clips = max(20, round(200 * scale))
    bank, _ = make_machine(n_clips, 4)
    clip, tt = np.nonzero(bank.valid_time())
    machine = l2_normalize(bank.tokens[clip, tt, 0])
    rng = np.random.default_rng(1)
    sizes = np.maximum(1, (len(machine) / np.arange(1, 401) ** 1.1 / 7).astype(int))
    centres = rng.standard_normal((len(sizes), machine.shape[1])).astype(np.float32)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    clustered = l2_normalize(centres[lab] + 0.35 * rng.standard_normal((len(lab), machine.shape[1]),
                                                                        dtype=np.float32))
    rows = []
    for data_name, x in (("machine", machine), ("clustered", clustered)):
        n = int(np.ceil(0.1 * len(x)))

        def radius(sel):
            dist, _ = knn_search(x, x[sel], 1, normalize=False)
            return float(dist.max()), float(dist.mean())

        rnd = np.random.default_rng(0).choice(len(x), n, replace=False)
        rows.append({"data": data_name, "n": len(x), "method": "random", "seconds": 0.0,
                     "radius": radius(rnd)})
        for proj in ((None, 128, 64, 32) if len(x) <= 20000 else (128, 64, 32)):
            t0 = time.perf_counter()
            sel = greedy_coreset(x, n=n, proj_dim=proj, normalize=False)
            rows.append({"data": data_name, "n": len(x), "method": f"greedy proj={proj}",
                         "seconds": time.perf_counter() - t0, "radius": radius(sel)})
    print(f"coreset quality: 10 % of one band's tokens ({n_clips} clips)")
    print("| data | tokens | method | seconds | max radius | mean radius |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['n']} | {r['method']} | {r['seconds']:.2f} | "
              f"{r['radius'][0]:.4f} | {r['radius'][1]:.4f} |")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 1000/200 clips")
    ap.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    ap.add_argument("--coreset-quality", action="store_true", help="only the coreset radius study")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_child(args.child, args.data)), flush=True)
        return
    if args.coreset_quality:
        coreset_quality(args.scale)
        return

    cases = args.cases or DEFAULT_CASES
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {list(CASES)}")
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}; scale {args.scale}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_branches_") as folder:
        t0 = time.perf_counter()
        save_machine(folder, args.scale)
        print(f"data generated in {time.perf_counter() - t0:.1f} s", flush=True)
        for case in cases:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case,
                                   "--data", folder], capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{case}: FAILED\n{proc.stderr[-3000:]}", flush=True)
                continue
            res = json.loads(line[0][7:])
            results.append(res)
            print(f"  {case:24s} {res['total_s']:7.1f} s wall, {res['total_cpu_s']:7.1f} s cpu, "
                  f"peak {res['peak_rss_gib']:.2f} GiB, load {os.getloadavg()[0]:.1f}", flush=True)

    print("\nPer case (own subprocess). wall = fit + score + self_scores; cpu = process CPU seconds "
          "(2 cores); peak RSS includes the memory-mapped data pages read; matmul = float32 "
          "(4096x768)x(768x16384) numpy in the same process, wall GFLOP/s / GFLOP per CPU-s; "
          "fine: effective rate = distance-matrix GFLOP (2*M*N*D) / wall s, and per CPU-s "
          "relative to matmul per CPU-s.\n")
    print("| case | branch | fit s | score s | wall s | cpu s | peak RSS GiB | matmul | GFLOP | GFLOP/s | eff. / matmul (cpu) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    clip_total = clip_cpu = 0.0
    for res in results:
        for row in res["branches"]:
            tot = row["fit_s"] + row["score_s"] + row["self_s"]
            gf = row.get("gflop")
            if gf and tot > 1:
                eff = f"{gf:.0f} | {gf / tot:.1f} | {gf / row['cpu_s'] / res['matmul_cpu']:.2f}"
            elif gf:
                eff = "shared | | "
            else:
                eff = " | | "
            print(f"| {res['case']} | {row['branch']} | {row['fit_s']:.2f} | {row['score_s']:.2f} | "
                  f"{tot:.2f} | {row['cpu_s']:.1f} | {res['peak_rss_gib']:.2f} | "
                  f"{res['matmul_wall']:.0f} / {res['matmul_cpu']:.0f} | {eff} |")
        if res["case"] in CLIP_BRANCHES:
            clip_total += res["total_s"]
            clip_cpu += res["total_cpu_s"]
    if clip_total:
        print(f"\nclip-level branches (default params) together: {clip_total:.1f} s wall, {clip_cpu:.1f} s cpu")
    for res in results:
        if res["case"].startswith("fine"):
            print(f"{res['case']}: both fine branches {res['total_s']:.1f} s wall, "
                  f"{res['total_cpu_s']:.1f} s cpu, peak {res['peak_rss_gib']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scale": args.scale, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()

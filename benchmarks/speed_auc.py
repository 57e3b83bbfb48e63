"""Speed against quality of the fine-grained branches' search settings.

Settings: the exact flat search (the default), ``search_dim`` 64 and 32 (approximate
candidate search in the top principal directions, exact re-ranking: `asdlib.bounded_knn`),
faiss inverted-file indexes (``ivf_lists`` k-means cells, ``ivf_probe`` visited), and greedy
k-centre coresets keeping 50 %, 25 % and 10 % of the source tokens. For each, the two
fine-grained branches (notebook 04's specs: one shared fit) on every machine of a run's
feature store, in a process of its own: wall seconds, peak resident memory, and the
official score and AUC per fault kind of fine_selective and fine_broad. With
``--dcase-work`` (a `benchmarks/dcase_rehearsal.py` work folder) the same settings also run
on its DCASE-size machine (random-weight base encoder: its scores are not a quality
figure). The float32 and bfloat16 matrix-product rates of this CPU, measured in the same
run, are the baseline.

    PYTHONPATH=. python benchmarks/speed_auc.py results/demo [--dcase-work /tmp/rehearsal]

About 4 minutes on the demo, 25 more with the DCASE-size machine (2 cores). Writes
``results/speed_auc/speed_auc.{csv,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import open_source, peak_rss_gib  # noqa: E402

from asdlib import atomic, evidence, scoring  # noqa: E402

#: The run options' settings (`scoring.FINE_SEARCH`: --fine-search pca / ivf) come from the
#: pipeline's table, so the benchmark measures what a run uses; the others are variants.
SETTINGS = {"exact (default)": scoring.FINE_SEARCH["exact"],
            "search_dim 64": scoring.FINE_SEARCH["pca"], "search_dim 32": {"search_dim": 32},
            "ivf 256 cells, 16 visited": {"ivf_lists": 256, "ivf_probe": 16},
            "ivf 256 cells, 4 visited": scoring.FINE_SEARCH["ivf"],
            "coreset 50 %": {"coreset": 0.5},
            "coreset 25 %": {"coreset": 0.25}, "coreset 10 %": {"coreset": 0.1}}


def matmul_rates(n: int = 1024, repeats: int = 3) -> dict[str, float]:
    """Best GFLOP/s of an n x n x n product in float32 and bfloat16 (torch, this CPU)."""
    import torch

    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out[name] = 2 * n ** 3 / best / 1e9
    return out


def run_setting(store, table, params: dict, machines=None) -> tuple[float, pd.DataFrame]:
    """(seconds, test score rows) of both fine-grained branches on every machine."""
    from asdlib.branches import clear_scorer_cache

    clear_scorer_cache()            # no fit carried over from another setting
    sub = table if machines is None else table[table["machine"].isin(machines)]
    t0 = time.time()
    scores = scoring.score_run(store, sub, scoring.with_params(scoring.PATCH_SPECS, params), progress=False)
    return time.time() - t0, scores[~scores["is_self"]]


def markdown(table: pd.DataFrame, rates: dict, dcase: bool) -> str:
    lines = [f"Matrix products on this CPU, same run: float32 {rates['float32']:.0f} GFLOP/s, "
             f"bfloat16 {rates['bfloat16']:.2f} GFLOP/s.", "",
             "| setting | demo s | demo peak GiB | fine_selective official | transient | "
             "narrowband | broad | fine_broad official |"
             + (" DCASE machine s | DCASE peak GiB |" if dcase else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if dcase else "")]
    for r in table.itertuples():
        lines.append(f"| {r.setting} | {r.demo_s:.1f} | {r.demo_peak_gib:.2f} | "
                     f"{r.sel_official:.2f} | {r.sel_transient:.1f} | {r.sel_narrowband:.1f} | "
                     f"{r.sel_broad:.1f} | {r.broad_official:.2f} |"
                     + (f" {r.dcase_s:.0f} | {r.dcase_peak_gib:.2f} |" if dcase else ""))
    return "\n".join(lines) + "\n"


def child(source: str, setting: str) -> dict:
    """One setting on one feature source (`bench_common.open_source`), in this process:
    seconds, peak GiB, summary."""
    store, table = open_source(source)
    seconds, scores = run_setting(store, table, SETTINGS[setting])
    summary = evidence.summarise(scores, ["branch"]).set_index("branch")
    return {"seconds": seconds, "peak_gib": peak_rss_gib(),
            "summary": summary.reset_index().to_dict(orient="list")}


def run_child(source: str, setting: str) -> dict:
    cmd = [sys.executable, __file__, "--child", source, setting]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"setting {setting!r} on {source} failed")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["summary"] = pd.DataFrame(out["summary"]).set_index("branch")
    return out


def main(argv=None) -> None:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3]), default=float))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--dcase-work", type=Path, default=None)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "speed_auc")
    args = ap.parse_args(argv)
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    rates = matmul_rates()
    rows = []
    for name in args.settings:
        demo = run_child(str(Path(args.run_dir).resolve()), name)
        sel, broad = demo["summary"].loc["fine_selective"], demo["summary"].loc["fine_broad"]
        row = {"setting": name, "demo_s": demo["seconds"], "demo_peak_gib": demo["peak_gib"],
               "sel_official": sel["official"], "sel_transient": sel["transient"],
               "sel_narrowband": sel["narrowband"], "sel_broad": sel["broad"],
               "broad_official": broad["official"]}
        if args.dcase_work is not None:
            big = run_child(f"dcase:{args.dcase_work.resolve()}", name)
            row["dcase_s"], row["dcase_peak_gib"] = big["seconds"], big["peak_gib"]
            row["dcase_sel_official"] = big["summary"].loc["fine_selective", "official"]
        rows.append(row)
        print(f"{name}: {row}", flush=True)
    out_table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "speed_auc.csv", out_table.round(3).to_csv(index=False))
    text = (f"`PYTHONPATH=. python benchmarks/speed_auc.py {args.run_dir}"
            + (f" --dcase-work {args.dcase_work}" if args.dcase_work else "") + "`\n\n"
            + markdown(out_table, rates, args.dcase_work is not None))
    atomic.write_text(args.out / "speed_auc.md", text)
    print(text)


if __name__ == "__main__":
    main()

"""Speed against quality of the fine-grained branches' search settings.

Settings: the exact flat search (the default), ``search_dim`` 64 and 32 (approximate
candidate search in the top principal directions, exact re-ranking: `asdlib.bounded_knn`),
and greedy k-centre coresets keeping 50 %, 25 % and 10 % of the source tokens. For each,
the two fine-grained branches (notebook 04's specs: one shared fit) on every machine of a
run's feature store: wall seconds, and the official score and AUC per fault kind of
fine_selective and fine_broad. With ``--dcase-work`` (a `benchmarks/dcase_rehearsal.py`
work folder) the same settings also run on its DCASE-size machine for the seconds.
The float32 and bfloat16 matrix-product rates of this CPU, measured in the same run, are
the baseline.

    PYTHONPATH=. python benchmarks/speed_auc.py results/demo [--dcase-work /tmp/rehearsal]

About 3 minutes on the demo, 15 more with the DCASE-size machine (2 cores). Writes
``results/speed_auc/speed_auc.{csv,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asdlib import atomic, evidence, experiment, features, scoring  # noqa: E402

SETTINGS = {"exact (default)": {}, "search_dim 64": {"search_dim": 64},
            "search_dim 32": {"search_dim": 32}, "coreset 50 %": {"coreset": 0.5},
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


def specs_for(params: dict) -> list:
    return [scoring.BranchSpec(s.branch, {**s.params, **params}, s.label, s.layer)
            for s in scoring.PATCH_SPECS]


def run_setting(store, table, params: dict, machines=None) -> tuple[float, pd.DataFrame]:
    """(seconds, test score rows) of both fine-grained branches on every machine."""
    from asdlib.branches.patch import clear_scorer_cache

    clear_scorer_cache()            # no fit carried over from another setting
    sub = table if machines is None else table[table["machine"].isin(machines)]
    t0 = time.time()
    scores = scoring.score_run(store, sub, specs_for(params), progress=False)
    return time.time() - t0, scores[~scores["is_self"]]


def markdown(table: pd.DataFrame, rates: dict, dcase: bool) -> str:
    lines = [f"Matrix products on this CPU, same run: float32 {rates['float32']:.0f} GFLOP/s, "
             f"bfloat16 {rates['bfloat16']:.2f} GFLOP/s.", "",
             "| setting | demo s | fine_selective official | transient | narrowband | broad "
             "| fine_broad official |" + (" DCASE machine s |" if dcase else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if dcase else "")]
    for r in table.itertuples():
        lines.append(f"| {r.setting} | {r.demo_s:.1f} | {r.sel_official:.2f} | "
                     f"{r.sel_transient:.1f} | {r.sel_narrowband:.1f} | {r.sel_broad:.1f} | "
                     f"{r.broad_official:.2f} |" + (f" {r.dcase_s:.0f} |" if dcase else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--dcase-work", type=Path, default=None)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "speed_auc")
    args = ap.parse_args(argv)
    run = experiment.Run.open(args.run_dir)
    table, store = run.clip_table(), run.feature_store()
    rates = matmul_rates()
    dcase = None
    if args.dcase_work is not None:
        from asdlib import data

        dcase = (features.FeatureStore(Path((args.dcase_work / "store.txt").read_text())),
                 data.scan_dataset(args.dcase_work / "data"))
    rows = []
    for name in args.settings:
        seconds, scores = run_setting(store, table, SETTINGS[name])
        summary = evidence.summarise(scores, ["branch"]).set_index("branch")
        sel, broad = summary.loc["fine_selective"], summary.loc["fine_broad"]
        row = {"setting": name, "demo_s": seconds, "sel_official": sel["official"],
               "sel_transient": sel["transient"], "sel_narrowband": sel["narrowband"],
               "sel_broad": sel["broad"], "broad_official": broad["official"]}
        if dcase is not None:
            row["dcase_s"], _ = run_setting(dcase[0], dcase[1], SETTINGS[name])
        rows.append(row)
        print(f"{name}: {row}", flush=True)
    out_table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "speed_auc.csv", out_table.round(3).to_csv(index=False))
    text = (f"`PYTHONPATH=. python benchmarks/speed_auc.py {args.run_dir}"
            + (f" --dcase-work {args.dcase_work}" if dcase else "") + "`\n\n"
            + markdown(out_table, rates, dcase is not None))
    atomic.write_text(args.out / "speed_auc.md", text)
    print(text)


if __name__ == "__main__":
    main()

"""The held-out protocol: the whole pipeline, run as a user runs it, on synthetic data that no
choice of the project was made on, beside both encoder-free floors of the same run.

Every choice (recipe, views, distances, aggregations, fusion) was tuned on the embedded
default (demo preset, seed 0). The held-out datasets are the same generator with fresh
seeds, and one shifted fault setting (`asdlib.synth.VARIANTS["shifted"]`: shorter and
weaker impacts, other fault-tone frequencies, a lower far-field SNR, machines running
faster). For each, this script generates the data, runs

    python -m asdlib.pipeline --run heldout-<name> --data-root <root> --results-root <work>/results

with every other option at its default, and reads the run's score tables: per system
(weights chosen on the run's own labels, and leave-one-machine-out) and per branch, the
official score and the AUC per fault kind, beside the clip- and frame-level floors.

Usage::

    PYTHONPATH=. python benchmarks/heldout.py [--work /tmp/heldout] [--datasets seed3 ...]

Writes ``results/heldout/summary.csv`` and ``summary.md`` (and prints the table). About
6 minutes per dataset on 2 cores (1 to generate, 5 for the pipeline).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asdlib import floors, metrics, synth  # noqa: E402
from asdlib.experiment import CHANNELS  # noqa: E402
from asdlib.scoring import load_scores  # noqa: E402

#: name -> (seed, variant): never used to choose anything.
HELDOUT = {"seed3": (3, "default"), "seed4": (4, "default"), "shifted5": (5, "shifted")}
KINDS = ("transient", "narrowband", "broad")


def _row(scores: pd.DataFrame) -> dict:
    """Official score, AUC_s / AUC_t / pAUC and AUC per kind (%) of a tidy test table."""
    table = metrics.evaluate_table(scores, kind_column="kind")
    overall = table.loc["Overall"]
    out = {"official": overall["hmean"], "AUC_s": overall["AUC_s"], "AUC_t": overall["AUC_t"],
           "pAUC": overall["pAUC"]}
    out.update({kind: overall.get(f"AUC[{kind}]") for kind in KINDS})
    return {k: 100 * v for k, v in out.items()}


def summarise(run_dir: Path, dataset: str) -> pd.DataFrame:
    """Rows: both floors, every system (dev, LOMO), every branch of the run."""
    from asdlib.experiment import Run

    run = Run.open(run_dir)
    rows = []
    floor_scores = floors.load(run)
    for branch, label in floors.LABELS.items():
        rows.append({"dataset": dataset, "what": "floor", "name": label,
                     **_row(floor_scores[floor_scores["branch"] == branch])})
    fused = pd.read_csv(run_dir / "06_fusion" / "fused_scores.csv", dtype={"name": str})
    for (system, selection), g in fused.groupby(["system", "selection"], sort=True):
        name = system if selection == "dev" else f"{system} (LOMO)"
        rows.append({"dataset": dataset, "what": "system", "name": name, **_row(g)})
    scores = load_scores(run)
    test = scores[~scores["is_self"]]
    for branch, g in test.groupby("branch", sort=False):
        rows.append({"dataset": dataset, "what": "branch", "name": branch, **_row(g)})
    return pd.DataFrame(rows)


def run_dataset(name: str, work: Path, preset: str = "demo", channel: str = "near") -> Path:
    seed, variant = HELDOUT[name]
    root = work / "data" / name
    synth.ensure_dataset(root, preset, seed=seed, variant=variant)
    run = f"heldout-{name}" + ("" if channel == "near" else f"-{channel}")
    cmd = [sys.executable, "-m", "asdlib.pipeline", "--run", run, "--data-root", str(root),
           "--results-root", str(work / "results")]
    if channel != "near":
        cmd += ["--channel", channel]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return work / "results" / run


def code_version() -> str:
    """The checkout's commit (with "+changes" when the tree differs from it)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "asdlib", "notebooks") else "")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/heldout", help="data and runs go here")
    ap.add_argument("--datasets", nargs="*", default=list(HELDOUT), choices=list(HELDOUT))
    ap.add_argument("--channel", default="near", choices=CHANNELS,
                    help="the pipeline's --channel (default near, the pipeline's default)")
    ap.add_argument("--out", default=None,
                    help="summary folder (default results/heldout, or results/heldout-<channel>)")
    args = ap.parse_args(argv)
    version = code_version()
    work = Path(args.work)
    parts = []
    for name in args.datasets:
        t0 = time.time()
        run_dir = run_dataset(name, work, channel=args.channel)
        parts.append(summarise(run_dir, name))
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    table = pd.concat(parts, ignore_index=True)
    numbers = [c for c in table.columns if c not in ("dataset", "what", "name")]
    mean = (table.groupby(["what", "name"], sort=False)[numbers].mean().reset_index()
            .assign(dataset="mean"))
    table = pd.concat([table, mean], ignore_index=True)
    out = Path(args.out or ROOT / "results" / (
        "heldout" if args.channel == "near" else f"heldout-{args.channel}"))
    out.mkdir(parents=True, exist_ok=True)
    table.round(2).to_csv(out / "summary.csv", index=False)
    wide = table.pivot_table(index=["what", "name"], columns="dataset", values="official",
                             sort=False)
    md = dict(percent=False, align_numbers=True)
    lines = [f"Code {version}, channel {args.channel}, {time.strftime('%Y-%m-%d')}; "
             "`PYTHONPATH=. python benchmarks/heldout.py"
             + ("" if args.channel == "near" else f" --channel {args.channel}") + "`", "",
             "Official score (%) per held-out dataset:", "",
             metrics.table_markdown(wide, digits=2, **md),
             "Mean over the held-out datasets (%):", "",
             metrics.table_markdown(mean.drop(columns="dataset").set_index(["what", "name"]),
                                    digits=1, **md)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

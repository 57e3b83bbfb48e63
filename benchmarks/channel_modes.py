"""Channel modes compared: the whole pipeline with ``--channel near | far | residual | both``
on the embedded default (the tuning data) and on held-out datasets (`benchmarks/heldout.py`),
each beside the floors of the same microphone(s).

    PYTHONPATH=. python benchmarks/channel_modes.py [--channels near far residual both]
        [--datasets demo seed3] [--work /tmp/heldout]

A finished near-channel run (``make run``'s results/demo, a held-out run of
``benchmarks/heldout.py`` under --work) is read as it is. Writes
``results/channel_modes/summary.{csv,md}``: official score and AUC per fault kind of the
systems, the fine-grained branches and both floors, per channel and dataset. About 9
minutes per demo run and 6 per held-out run on 2 cores.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from heldout import HELDOUT, code_version, run_dataset, summarise  # noqa: E402

from asdlib import metrics  # noqa: E402
from asdlib.experiment import CHANNELS  # noqa: E402

#: The rows compared (everything else is in each run's own tables).
SHOWN = ("log-mel clip kNN", "log-mel frame kNN", "System 1", "System 2", "System 3",
         "System 3 (LOMO)", "System 4", "fine_broad", "fine_selective")


def run_demo(channel: str) -> Path:
    """The embedded default with ``channel`` (results/demo for near, demo-<channel> else)."""
    run = "demo" if channel == "near" else f"demo-{channel}"
    cmd = [sys.executable, "-m", "asdlib.pipeline", "--run", run, "--channel", channel]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return ROOT / "results" / run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", nargs="*", default=list(CHANNELS), choices=CHANNELS)
    ap.add_argument("--datasets", nargs="*", default=["demo", "seed3"],
                    choices=["demo", *HELDOUT])
    ap.add_argument("--work", default="/tmp/heldout", help="held-out data and runs")
    ap.add_argument("--out", default=str(ROOT / "results" / "channel_modes"))
    args = ap.parse_args(argv)
    version, parts = code_version(), []
    for dataset in args.datasets:
        for channel in args.channels:
            t0 = time.time()
            reuse = (ROOT / "results" / "demo" if dataset == "demo"
                     else Path(args.work) / "results" / f"heldout-{dataset}")
            if channel == "near" and (reuse / "06_fusion" / "fused_scores.csv").exists():
                run_dir = reuse  # a finished near run of make run or benchmarks/heldout.py
            else:
                run_dir = (run_demo(channel) if dataset == "demo"
                           else run_dataset(dataset, Path(args.work), channel=channel))
            parts.append(summarise(run_dir, dataset).assign(channel=channel))
            print(f"{dataset} {channel}: {time.time() - t0:.0f} s", flush=True)
    table = pd.concat(parts, ignore_index=True)
    table = table[table["name"].isin(SHOWN)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.round(2).to_csv(out / "summary.csv", index=False)
    md = dict(percent=False, align_numbers=True)
    lines = [f"Code {version}, {time.strftime('%Y-%m-%d')}; `PYTHONPATH=. python "
             f"benchmarks/channel_modes.py --channels {' '.join(args.channels)} "
             f"--datasets {' '.join(args.datasets)}`", ""]
    for dataset, rows in table.groupby("dataset", sort=False):
        official = rows.pivot_table(index="name", columns="channel", values="official",
                                    sort=False)[args.channels]
        transient = rows.pivot_table(index="name", columns="channel", values="transient",
                                     sort=False)[args.channels]
        lines += [f"{dataset}: official score (%) per channel mode", "",
                  metrics.table_markdown(official, digits=1, **md),
                  f"{dataset}: transient AUC (%) per channel mode", "",
                  metrics.table_markdown(transient, digits=1, **md)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

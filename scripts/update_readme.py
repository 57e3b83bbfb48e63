"""Write the README's result tables from the committed runs, or check that they agree.

The README holds blocks between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``;
each is rendered here from the files of ``results/demo`` (the embedded default run),
``results/demo-eval`` (its evaluation split) and ``results/heldout/summary.csv``
(``benchmarks/heldout.py``), so no number in the README is
typed by hand. ``tests/test_project.py`` fails when the README and the results disagree.

    .venv/bin/python scripts/update_readme.py           # rewrite the blocks
    .venv/bin/python scripts/update_readme.py --check   # exit 1 if a block is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = ROOT / "results" / "demo"
DEMO_EVAL = ROOT / "results" / "demo-eval"
HELDOUT = ROOT / "results" / "heldout" / "summary.csv"
CHANNEL_MODES = ROOT / "results" / "channel_modes" / "summary.csv"
SYSTEMS = ["System 1", "System 2", "System 3", "System 4"]
FLOORS = ["log-mel clip kNN", "log-mel frame kNN"]
KINDS = ["transient", "narrowband", "broad"]
#: Rows of the README's held-out table (results/heldout/summary.md has every branch).
HELDOUT_ROWS = FLOORS + SYSTEMS + ["System 3 (LOMO)", "fine_selective", "fine_broad",
                                   "adabeam", "band_knn", "utt_knn"]


def _md(frame: pd.DataFrame, digits: int = 1) -> str:
    """A small Markdown table (index as the first column), numbers right-aligned."""
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * len(frame.columns)]
    for idx, row in frame.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.{digits}f}" for v in row.to_numpy()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def demo_overall() -> str:
    """Overall rows of Table 1 on the embedded default: systems, LOMO, both floors."""
    table = pd.read_csv(DEMO / "07_results" / "table1.csv")
    overall = table[table["machine"] == "Overall"].set_index("metric")
    columns = SYSTEMS + FLOORS + [f"{s} (LOMO)" for s in SYSTEMS]
    frame = overall[[c for c in columns if c in overall]].T
    frame.index.name = "Overall (%)"
    frame = frame.rename(columns={"hmean": "official score"})
    return _md(frame[["AUC_s", "AUC_t", "pAUC", "official score"]], 2)


def demo_kinds() -> str:
    """Official score and AUC per fault kind of every branch and both floors (demo run)."""
    parts = [pd.read_csv(DEMO / step / "branch_summary.csv", index_col=0)
             for step in ("03_subband", "04_patch")]
    summary = pd.concat(parts)
    summary = summary[~summary.index.duplicated()]
    frame = summary[["hmean"] + [f"AUC[{k}]" for k in KINDS]]
    frame.columns = ["official"] + KINDS
    frame.index.name = "branch (%)"
    return _md(frame)


def demo_eval() -> str:
    """Overall rows of the synthetic evaluation split (weights frozen on the demo run),
    scored with the generator's ground truth (``benchmarks/eval_split.py``)."""
    table = pd.read_csv(DEMO_EVAL / "07_results" / "eval_ground_truth_table.csv")
    overall = table[table["machine"] == "Overall"].set_index("metric")
    frame = overall[[c for c in SYSTEMS if c in overall]].T
    frame.index.name = "evaluation split, Overall (%)"
    frame = frame.rename(columns={"hmean": "official score"})
    return _md(frame[["AUC_s", "AUC_t", "pAUC", "official score"]], 2)


def heldout() -> str:
    """Mean over the held-out datasets: both floors, the systems, the main branches."""
    table = pd.read_csv(HELDOUT)
    mean = table[table["dataset"] == "mean"].set_index("name")
    mean = mean.loc[[n for n in HELDOUT_ROWS if n in mean.index]]
    frame = mean[["official", "AUC_s", "AUC_t", "pAUC"] + KINDS]
    frame.index.name = "held-out mean (%)"
    per = table[table["dataset"] != "mean"].pivot_table(index="name", columns="dataset",
                                                        values="official", sort=False)
    frame = frame.join(per.add_prefix("official "))
    return _md(frame)


def heldout_standing() -> str:
    """What the held-out table says, in sentences computed from it: each system against
    the frame floor per dataset, the transients, and branches at or below chance."""
    table = pd.read_csv(HELDOUT)
    per = table[table["dataset"] != "mean"].pivot_table(index="name", columns="dataset",
                                                        values="official", sort=False)
    mean = table[table["dataset"] == "mean"].set_index("name")
    frame_floor = FLOORS[1]
    lines = []
    for system in SYSTEMS:
        margin = per.loc[system] - per.loc[frame_floor]
        lines.append(f"- {system}: {mean.loc[system, 'official']:.1f} official, "
                     f"{'above' if margin.mean() > 0 else 'below'} the frame floor by "
                     f"{abs(margin.mean()):.1f} points on average, above it on "
                     f"{int((margin > 0).sum())} of {len(margin)} datasets "
                     f"(LOMO: {mean.loc[f'{system} (LOMO)', 'official']:.1f}); transients "
                     f"{mean.loc[system, 'transient']:.1f} against the frame floor's "
                     f"{mean.loc[frame_floor, 'transient']:.1f}.")
    chance = [f"{name} ({kind} {mean.loc[name, kind]:.1f})" for name in mean.index
              for kind in KINDS if mean.loc[name, kind] <= 52.0 and "LOMO" not in name]
    lines.append("- At chance (AUC <= 52) on a fault kind: "
                 + (", ".join(chance) if chance else "no branch or system") + ".")
    return "\n".join(lines)


def channel_modes() -> str:
    """Official score and transient AUC per channel mode, on the tuning data and held out
    (``benchmarks/channel_modes.py``)."""
    table = pd.read_csv(CHANNEL_MODES)
    rows = [n for n in ("log-mel frame kNN", "System 1", "System 3", "System 4") if n in
            set(table["name"])]
    table = table[table["name"].isin(rows)]
    frame = table.pivot_table(index="name", columns=["dataset", "channel"], values="official",
                              sort=False)
    channels = list(dict.fromkeys(table["channel"]))
    frame = frame.reindex(columns=[(d, c) for d in dict.fromkeys(table["dataset"])
                                   for c in channels])
    frame.columns = [f"{d} {c}" for d, c in frame.columns]
    frame.index.name = "official (%)"
    return _md(frame.loc[rows])


BLOCKS = {"demo-overall": demo_overall, "demo-kinds": demo_kinds, "demo-eval": demo_eval,
          "heldout": heldout,
          "heldout-standing": heldout_standing, "channel-modes": channel_modes}


def render(text: str) -> str:
    """``text`` with every results block rewritten."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)",
                             re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"README has no block {name!r}")
        text = pattern.sub(lambda m, make=make: f"{m.group(1)}{make()}\n{m.group(2)}", text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a block is stale")
    args = ap.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README result blocks differ from results/: run scripts/update_readme.py")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())

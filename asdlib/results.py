"""The report's Table 1: our systems per machine and overall, beside the report's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from asdlib import metrics

METRICS = ("AUC_s", "AUC_t", "pAUC", "hmean")

#: Table 1 of the WISTLAB report (development set, %), systems 1-4 per machine and metric.
REPORT_TABLE1: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("bearingEmu", "AUC_s"): (63.38, 64.44, 64.54, 64.86),
    ("bearingEmu", "AUC_t"): (68.30, 69.14, 68.78, 65.82),
    ("bearingEmu", "pAUC"): (61.26, 60.95, 60.84, 60.32),
    ("bearingEmu", "hmean"): (64.18, 64.67, 64.56, 63.57),
    ("fan", "AUC_s"): (75.24, 75.58, 75.42, 75.08),
    ("fan", "AUC_t"): (60.92, 63.46, 63.26, 62.50),
    ("fan", "pAUC"): (60.58, 58.63, 59.11, 60.42),
    ("fan", "hmean"): (64.92, 65.15, 65.24, 65.40),
    ("gearboxEmu", "AUC_s"): (75.26, 78.00, 77.80, 80.94),
    ("gearboxEmu", "AUC_t"): (68.58, 75.28, 74.98, 80.42),
    ("gearboxEmu", "pAUC"): (54.63, 57.26, 57.11, 64.32),
    ("gearboxEmu", "hmean"): (64.97, 68.86, 68.65, 74.37),
    ("sliderEmu", "AUC_s"): (59.28, 58.64, 59.32, 63.04),
    ("sliderEmu", "AUC_t"): (66.68, 67.58, 67.52, 69.74),
    ("sliderEmu", "pAUC"): (53.32, 53.05, 53.21, 51.32),
    ("sliderEmu", "hmean"): (59.26, 59.17, 59.45, 60.38),
    ("ToyCar", "AUC_s"): (71.38, 76.02, 76.16, 80.18),
    ("ToyCar", "AUC_t"): (81.42, 84.24, 83.96, 82.70),
    ("ToyCar", "pAUC"): (66.42, 66.21, 66.05, 67.11),
    ("ToyCar", "hmean"): (72.56, 74.76, 74.66, 76.02),
    ("ToyCarEmu", "AUC_s"): (60.30, 54.30, 54.00, 60.36),
    ("ToyCarEmu", "AUC_t"): (79.42, 79.36, 79.64, 83.70),
    ("ToyCarEmu", "pAUC"): (51.89, 52.26, 52.47, 53.32),
    ("ToyCarEmu", "hmean"): (61.92, 59.82, 59.84, 63.47),
    ("valveEmu", "AUC_s"): (75.28, 77.58, 77.46, 77.20),
    ("valveEmu", "AUC_t"): (79.70, 83.38, 83.06, 82.96),
    ("valveEmu", "pAUC"): (58.05, 59.37, 58.95, 56.63),
    ("valveEmu", "hmean"): (69.67, 71.90, 71.58, 70.31),
    ("Overall", "AUC_s"): (68.59, 69.22, 69.24, 71.67),
    ("Overall", "AUC_t"): (72.15, 74.63, 74.46, 75.41),
    ("Overall", "pAUC"): (58.02, 58.25, 58.25, 59.06),
    ("Overall", "hmean"): (65.10, 65.89, 65.86, 67.20),
}
REPORT_SYSTEMS = ("System 1", "System 2", "System 3", "System 4")
DEV_MACHINES_2026 = ("bearingEmu", "fan", "gearboxEmu", "sliderEmu", "ToyCar", "ToyCarEmu",
                     "valveEmu")

#: Markdown layout of a Table-1-style frame (values already in %), for
#: ``metrics.table_markdown(table, **TABLE1_MARKDOWN)``: the machine name is printed once
#: per block, Overall in bold, values right-aligned.
TABLE1_MARKDOWN = {"percent": False, "digits": 2, "index_labels": ("Machine", "Metric"),
                   "align_numbers": True, "bold_rows": ("Overall",)}


def report_table1() -> pd.DataFrame:
    """The report's Table 1 as a (machine, metric) x system frame, in %."""
    idx = pd.MultiIndex.from_tuples(list(REPORT_TABLE1), names=["machine", "metric"])
    return pd.DataFrame(list(REPORT_TABLE1.values()), index=idx, columns=list(REPORT_SYSTEMS))


def table1(scores: pd.DataFrame, score_col: str = "score", by: str = "system") -> pd.DataFrame:
    """Our Table 1: rows (machine, metric) incl. Overall, one column per ``by`` value, in %.

    ``scores`` is a long table with columns machine, name, domain, label, ``by`` and the
    score column; each ``by`` group is evaluated with the official metric.
    """
    columns = {}
    for key, group in scores.groupby(by, sort=False):
        per = metrics.evaluate_table(group.rename(columns={score_col: "score"})[
            ["machine", "name", "score", "label", "domain"]])
        columns[key] = per[list(METRICS)].stack() * 100
    out = pd.DataFrame(columns)
    out.index.names = ["machine", "metric"]
    return out


def is_real_dev_set(machines) -> bool:
    """True when the run's machines are exactly the 2026 development machines."""
    return set(machines) == set(DEV_MACHINES_2026)


def with_report(ours: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the report's numbers and the difference (ours - report), per system."""
    report = report_table1().reindex(ours.index)
    parts = {}
    for s in REPORT_SYSTEMS:
        if s in ours.columns:
            parts[(s, "ours")] = ours[s]
            parts[(s, "report")] = report[s]
            parts[(s, "diff")] = ours[s] - report[s]
    return pd.DataFrame(parts)


def overall_row(table: pd.DataFrame, metric: str = "hmean") -> pd.Series:
    """The Overall value of ``metric`` per column (official pooled hmean for 'hmean')."""
    return table.loc[("Overall", metric)].astype(float)


def flatten(table: pd.DataFrame) -> pd.DataFrame:
    """Table for CSV: machine and metric as columns."""
    out = table.reset_index()
    out.columns = [" / ".join(c).strip(" /") if isinstance(c, tuple) else c for c in out.columns]
    return out.replace({np.nan: None})


def standing(summary: pd.DataFrame, names, floors=("logmel_knn", "logmel_frame_knn"),
             column: str = "hmean", labels: dict | None = None) -> list[str]:
    """One sentence per row ``name`` of a branch summary (values in %): its ``column`` and
    where it stands against each floor row, e.g. "fine_selective: 78.40, 13.1 above the clip
    floor and 6.4 above the frame floor". Rows missing from ``summary`` are skipped."""
    labels = labels or {"logmel_knn": "the clip floor", "logmel_frame_knn": "the frame floor"}
    sentences = []
    for name in names:
        if name not in summary.index:
            continue
        value = float(summary.loc[name, column])
        parts = []
        for floor in floors:
            if floor in summary.index:
                diff = value - float(summary.loc[floor, column])
                parts.append(f"{abs(diff):.1f} {'above' if diff >= 0 else 'below'} "
                             f"{labels.get(floor, floor)}")
        sentences.append(f"{name}: {value:.2f}" + (", " + " and ".join(parts) if parts else ""))
    return sentences


def best_per_kind(summary: pd.DataFrame, kinds=("transient", "narrowband", "broad")) -> list[str]:
    """For each fault kind, the row of a branch summary with the highest AUC (values in %)."""
    out = []
    for kind in kinds:
        column = f"AUC[{kind}]"
        if column in summary.columns and summary[column].notna().any():
            best = summary[column].astype(float).idxmax()
            out.append(f"{kind}: {best} ({summary.loc[best, column]:.1f})")
    return out

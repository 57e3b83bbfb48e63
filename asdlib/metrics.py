"""The official DCASE Task 2 metric (2023-2026) and the submission files.

This module is the one place in the project where AUC, pAUC and the official score are
computed, so that every notebook and table agrees with the official evaluator
(`dcase2024_task2_evaluator.py`, unchanged in 2025 and 2026). Per machine (section 00):

- AUC_s: ROC AUC over source-domain normals plus ALL anomalies (both domains);
- AUC_t: the same with target-domain normals;
- pAUC: scikit-learn ``roc_auc_score(max_fpr=0.1)`` over all clips of the machine, i.e.
  the McClish-standardised partial AUC ``0.5 * (1 + (A - 0.005) / 0.095)``;
- official score: harmonic mean of every AUC_s, AUC_t and pAUC of all machines pooled.

Labels are 1 = anomaly, 0 = normal; ``is_target`` is 1 for the target domain; scores are
"higher = more anomalous". Ties are handled as scikit-learn does (half credit).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from asdlib import atomic

#: max_fpr of the official pAUC.
MAX_FPR = 0.1
#: Column names of a per-machine metric table (the report's Table 1).
TABLE_COLUMNS = ("AUC_s", "AUC_t", "pAUC", "hmean")
#: Name of the summary row of :func:`evaluate_table`.
OVERALL = "Overall"
#: Ground-truth sub-folders of the official evaluator.
GT_FOLDERS = ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes")

_SCORE_FILE = "anomaly_score_{machine}_section_{section}_test.csv"
_DECISION_FILE = "decision_result_{machine}_section_{section}_test.csv"
_SECTION = re.compile(r"^section_(\d{2})_")
_GT_FILE = "ground_truth_{machine}_section_00_test.csv"
_MAX_NAMES_SHOWN = 10


class MetricError(ValueError):
    """Inputs that the official metric cannot be computed on (empty class, NaN, bad label)."""


class SubmissionError(ValueError):
    """A submission or ground-truth file that is missing, malformed or does not match."""


# --------------------------------------------------------------------------- inputs

def _as_binary(values, what: str, positive: str, negative: str) -> np.ndarray:
    """0/1 int array from 0/1, bools or the two strings (case-insensitive)."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iuf":
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise MetricError(f"{what} contains NaN")
        bad = sorted(set(np.unique(arr).tolist()) - {0, 1})
        if bad:
            raise MetricError(f"{what} must be 0/1 (1 = {positive}); found {bad[:5]}")
        return arr.astype(np.int64)
    mapping = {positive: 1, negative: 0, "1": 1, "0": 0, "true": 1, "false": 0}
    out = np.empty(len(arr), dtype=np.int64)
    for i, v in enumerate(arr.tolist()):
        key = str(v).strip().lower() if v is not None else None
        if isinstance(v, (bool, np.bool_)):
            out[i] = int(v)
        elif isinstance(v, (int, np.integer)) and v in (0, 1):
            out[i] = int(v)
        elif key in mapping:
            out[i] = mapping[key]
        else:
            raise MetricError(
                f"{what} must be {negative!r}/{positive!r} or 0/1; found {v!r} at position {i}")
    return out


def labels_to_binary(labels) -> np.ndarray:
    """1 for anomaly, 0 for normal; accepts "normal"/"anomaly", 0/1 or bools."""
    return _as_binary(labels, "label", "anomaly", "normal")


def domains_to_binary(domains) -> np.ndarray:
    """1 for target, 0 for source; accepts "source"/"target", 0/1 or bools."""
    return _as_binary(domains, "domain", "target", "source")


def _as_scores(y_score, n: int | None = None) -> np.ndarray:
    """Finite float64 scores, with an error that says where NaN/inf are."""
    try:
        s = np.asarray(y_score, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise MetricError(f"scores must be numbers: {exc}") from None
    if n is not None and len(s) != n:
        raise MetricError(f"got {len(s)} scores for {n} labels")
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        raise MetricError(
            f"{len(bad)} of {len(s)} scores are NaN or infinite (positions {bad[:10].tolist()})")
    return s


# --------------------------------------------------------------------------- metrics

def _auc(y: np.ndarray, s: np.ndarray, what: str, max_fpr: float | None = None) -> float:
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricError(f"{what}: needs normals and anomalies, got {n_neg} normal(s) "
                          f"and {n_pos} anomaly(ies)")
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def machine_metrics(y_true, y_score, is_target, max_fpr: float = MAX_FPR) -> dict[str, float]:
    """Official per-machine metrics: ``{"auc_s", "auc_t", "pauc"}``.

    AUC_s uses source normals + all anomalies, AUC_t target normals + all anomalies,
    pAUC all clips with scikit-learn's McClish-standardised partial AUC at ``max_fpr``.
    Raises :class:`MetricError` when a class is empty or a score is NaN/infinite.
    """
    y = labels_to_binary(y_true)
    t = domains_to_binary(is_target)
    if len(t) != len(y):
        raise MetricError(f"got {len(t)} domains for {len(y)} labels")
    if len(y) == 0:
        raise MetricError("no clips to evaluate")
    s = _as_scores(y_score, len(y))
    anomaly = y == 1
    src = (t == 0) | anomaly
    tgt = (t == 1) | anomaly
    if not ((t == 0) & ~anomaly).any():
        raise MetricError("AUC_s: there are no source-domain normal clips")
    if not ((t == 1) & ~anomaly).any():
        raise MetricError("AUC_t: there are no target-domain normal clips")
    return {
        "auc_s": _auc(y[src], s[src], "AUC_s"),
        "auc_t": _auc(y[tgt], s[tgt], "AUC_t"),
        "pauc": _auc(y, s, "pAUC", max_fpr=max_fpr),
    }


def kind_auc(y_true, y_score, kinds) -> dict[str, float]:
    """AUC of all normals against the anomalies of each fault kind, ``{kind: auc}``.

    ``kinds`` gives the fault kind of each anomaly (the value on normal rows is ignored).
    Kinds are returned in sorted order.
    """
    y = labels_to_binary(y_true)
    s = _as_scores(y_score, len(y))
    k = np.asarray(kinds, dtype=object)
    if len(k) != len(y):
        raise MetricError(f"got {len(k)} kinds for {len(y)} labels")
    normal = y == 0
    if not normal.any():
        raise MetricError("kind AUC: there are no normal clips")
    missing = [i for i in np.flatnonzero(~normal) if k[i] is None or pd.isna(k[i])]
    if missing:
        raise MetricError(f"kind AUC: {len(missing)} anomalies have no kind (positions "
                          f"{missing[:10]})")
    out = {}
    for kind in sorted({str(v) for v in k[~normal]}):
        sel = normal | ((~normal) & (k.astype(str) == kind))
        out[kind] = _auc(y[sel], s[sel], f"AUC of kind {kind!r}")
    return out


DOMAIN_PAIRS = ("Ns-As", "Ns-At", "Nt-As", "Nt-At")


def domain_pair_auc(y_true, y_score, is_target) -> dict[str, float]:
    """AUC of the normals of one domain against the anomalies of one domain.

    Keys ``N<d>-A<e>`` (d, e = s(ource) | t(arget)): normals of domain d vs anomalies of
    domain e. AUC_s pools Ns-As and Ns-At, AUC_t pools Nt-As and Nt-At, so these four say
    whether a score loses on detection within a domain (Ns-As, Nt-At) or on the relative
    scale of the two domains' scores (Ns-At against Nt-As).
    """
    y = labels_to_binary(y_true)
    t = domains_to_binary(is_target)
    if len(t) != len(y):
        raise MetricError(f"got {len(t)} domains for {len(y)} labels")
    s = _as_scores(y_score, len(y))
    out = {}
    for name in DOMAIN_PAIRS:  # "N<d>-A<e>": the domains are read from the name
        normal_dom, anomaly_dom = int(name[1] == "t"), int(name[-1] == "t")
        sel = ((y == 0) & (t == normal_dom)) | ((y == 1) & (t == anomaly_dom))
        out[name] = _auc(y[sel], s[sel], f"AUC {name}")
    return out


def hmean(values: Iterable[float]) -> float:
    """Harmonic mean of non-negative values (0 if any value is 0, as scipy does)."""
    v = np.asarray(values if hasattr(values, "__len__") else list(values),
                   dtype=np.float64).ravel()
    if v.size == 0:
        raise MetricError("harmonic mean of no values")
    if not np.isfinite(v).all():
        raise MetricError(f"harmonic mean of non-finite values: {v[~np.isfinite(v)][:5]}")
    if (v < 0).any():
        raise MetricError(f"harmonic mean needs non-negative values, got {v[v < 0][:5]}")
    if (v == 0).any():
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


_COLUMN_ALIASES = {"auc_s": "AUC_s", "auc_t": "AUC_t", "pauc": "pAUC",
                   "auc (source)": "AUC_s", "auc (target)": "AUC_t"}


def _metric_columns(df: pd.DataFrame) -> dict[str, str]:
    """Map AUC_s/AUC_t/pAUC to the matching column of ``df`` (any common spelling)."""
    found = {}
    for col in df.columns:
        key = _COLUMN_ALIASES.get(str(col).strip().lower())
        if key and key not in found:
            found[key] = col
    missing = [c for c in ("AUC_s", "AUC_t", "pAUC") if c not in found]
    if missing:
        raise MetricError(f"per-machine table lacks columns {missing}; has {list(df.columns)}")
    return found


def official_score(per_machine) -> float:
    """Official score: harmonic mean of all AUC_s, AUC_t and pAUC values pooled.

    ``per_machine`` is a table with AUC_s/AUC_t/pAUC columns (any case; ``auc_s`` etc.),
    one row per machine (an "Overall" row, in the index or a ``machine`` column, is
    ignored), or a mapping ``machine -> machine_metrics(...)``.
    """
    if isinstance(per_machine, Mapping):
        per_machine = pd.DataFrame.from_dict(dict(per_machine), orient="index")
    df = per_machine
    keep = np.asarray([str(i) != OVERALL for i in df.index])
    if "machine" in df.columns:
        keep &= (df["machine"].astype(str) != OVERALL).to_numpy()
    df = df[keep]
    cols = _metric_columns(df)
    if len(df) == 0:
        raise MetricError("official score of an empty table")
    return hmean(df[[cols["AUC_s"], cols["AUC_t"], cols["pAUC"]]].to_numpy().ravel())


# --------------------------------------------------------------------------- tables

def _check_unique(names: Sequence[str], where: str) -> None:
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise SubmissionError(f"{where}: {len(dup)} duplicated name(s): {_show(dup)}")


def _show(names: Sequence[str]) -> str:
    names = list(names)
    head = ", ".join(map(str, names[:_MAX_NAMES_SHOWN]))
    more = f" ... (+{len(names) - _MAX_NAMES_SHOWN} more)" if len(names) > _MAX_NAMES_SHOWN else ""
    return head + more


def evaluate_table(scores_df: pd.DataFrame, kind_column: str | None = None) -> pd.DataFrame:
    """Per-machine metric table in the layout of the report's Table 1.

    Input: tidy table with columns ``machine, name, score, label, domain`` (label
    "normal"/"anomaly" or 0/1, domain "source"/"target" or 0/1). Output: index ``machine``
    (order of first appearance) plus a final "Overall" row; columns AUC_s, AUC_t, pAUC,
    hmean. Per machine, hmean is the harmonic mean of its three values; on the Overall row
    AUC_s/AUC_t/pAUC are arithmetic means over machines and hmean is the official pooled
    score. With ``kind_column``, one extra column ``AUC[<kind>]`` per fault kind
    (:func:`kind_auc`; NaN where a machine lacks the kind, Overall = mean over machines).
    """
    required = ["machine", "name", "score", "label", "domain"]
    if kind_column:
        required.append(kind_column)
    missing = [c for c in required if c not in scores_df.columns]
    if missing:
        raise MetricError(f"score table lacks columns {missing}; has {list(scores_df.columns)}")
    if len(scores_df) == 0:
        raise MetricError("score table is empty")
    rows, kinds = {}, {}
    for machine, group in scores_df.groupby("machine", sort=False):
        _check_unique(group["name"].astype(str).tolist(), f"machine {machine!r}")
        try:
            m = machine_metrics(group["label"].to_numpy(), group["score"].to_numpy(),
                                group["domain"].to_numpy())
            if kind_column:
                kinds[machine] = kind_auc(group["label"].to_numpy(), group["score"].to_numpy(),
                                          group[kind_column].to_numpy())
        except MetricError as exc:
            raise MetricError(f"machine {machine!r}: {exc}") from None
        rows[machine] = {"AUC_s": m["auc_s"], "AUC_t": m["auc_t"], "pAUC": m["pauc"],
                         "hmean": hmean([m["auc_s"], m["auc_t"], m["pauc"]])}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(TABLE_COLUMNS))
    table.index.name = "machine"
    overall = {c: float(table[c].mean()) for c in ("AUC_s", "AUC_t", "pAUC")}
    overall["hmean"] = official_score(table)
    if kind_column:
        all_kinds = sorted({k for per in kinds.values() for k in per})
        for k in all_kinds:
            table[f"AUC[{k}]"] = [kinds[m].get(k, np.nan) for m in table.index]
            overall[f"AUC[{k}]"] = float(np.nanmean(table[f"AUC[{k}]"].to_numpy()))
    table.loc[OVERALL] = pd.Series(overall)
    return table


def table_markdown(table: pd.DataFrame, percent: bool = True, digits: int = 2,
                   index_labels: Sequence[str] | None = None, align_numbers: bool = False,
                   bold_rows: Sequence = ()) -> str:
    """Markdown rendering of a metric table (values in % by default), no extra deps.

    The index gives the leading columns, one per level, headed by ``index_labels`` (default:
    the index names); in a multi-level index an outer level's value is printed only where
    it changes (once per block). Tuple column names are joined with " / ". Float cells get
    ``digits`` decimals (times 100 when ``percent``), NaN is left empty, anything else is
    printed with ``str``. ``align_numbers`` right-aligns the value columns; first-level
    index values in ``bold_rows`` (e.g. ``("Overall",)``) are printed in bold.
    """
    multi = isinstance(table.index, pd.MultiIndex)
    labels = (list(index_labels) if index_labels is not None
              else [name or "" for name in table.index.names])
    if len(labels) != table.index.nlevels:
        raise ValueError(f"{len(labels)} index labels for {table.index.nlevels} index levels")
    cols = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| " + " | ".join(labels + cols) + " |",
             "|" + "---|" * len(labels) + ("---:|" if align_numbers else "---|") * len(cols)]
    last: tuple = ()
    for idx, row in table.iterrows():
        key = idx if multi else (idx,)
        heads = []
        for level, value in enumerate(key):
            if level < len(key) - 1 and key[:level + 1] == last[:level + 1]:
                heads.append("")  # same block as the row above
            elif level == 0 and value in bold_rows:
                heads.append(f"**{value}**")
            else:
                heads.append(str(value))
        last = key
        cells = []
        for v in row.to_numpy():
            if isinstance(v, (float, np.floating)):
                cells.append("" if np.isnan(v) else f"{v * 100 if percent else v:.{digits}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(heads + cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def submission_paths(out_dir, machine: str, section: str = "00") -> tuple[Path, Path]:
    """Paths of the anomaly-score and decision files of one machine and section."""
    out_dir = Path(out_dir)
    return (out_dir / _SCORE_FILE.format(machine=machine, section=section),
            out_dir / _DECISION_FILE.format(machine=machine, section=section))


def section_of(name: str) -> str:
    """The two-digit section of a clip name (``section_01_...`` -> "01")."""
    match = _SECTION.match(str(name))
    if match is None:
        raise SubmissionError(f"{name!r}: a clip name starts with section_<nn>_")
    return match.group(1)


def write_submission(out_dir, machine: str, names: Sequence[str], scores,
                     decisions=None, section: str = "00") -> dict[str, Path]:
    """Write the official submission files of one machine and section; returns their paths.

    ``anomaly_score_<machine>_section_<section>_test.csv`` (rows ``<wav name>,<score>``,
    scores written with full float precision so they read back exactly) and, when
    ``decisions`` is given, ``decision_result_<machine>_section_<section>_test.csv`` (rows
    ``<wav name>,0|1``). No header; each file is written atomically. Every name must belong
    to ``section``.
    """
    names = [str(n) for n in names]
    _check_unique(names, f"submission of {machine!r}")
    bad = [n for n in names if not n or "," in n or "\n" in n]
    if bad:
        raise SubmissionError(f"invalid wav names for a CSV row: {_show(bad)}")
    other = [n for n in names if _SECTION.match(n) and section_of(n) != section]
    if other:
        raise SubmissionError(f"clips of another section than {section} in the section "
                              f"{section} file of {machine!r}: {_show(other)}")
    s = _as_scores(scores, len(names))
    score_path, decision_path = submission_paths(out_dir, machine, section)
    atomic.write_text(score_path, "".join(f"{n},{float(v)!r}\n" for n, v in zip(names, s)))
    out = {"anomaly_score": score_path}
    if decisions is not None:
        d = _as_binary(decisions, "decision", "1", "0")
        if len(d) != len(names):
            raise SubmissionError(f"got {len(d)} decisions for {len(names)} names")
        atomic.write_text(decision_path, "".join(f"{n},{int(v)}\n" for n, v in zip(names, d)))
        out["decision_result"] = decision_path
    return out


def _read_two_columns(path: Path, what: str) -> pd.DataFrame:
    """Read a headerless ``<name>,<value>[,...]`` CSV, keeping every column as text."""
    if not path.is_file():
        raise SubmissionError(f"{what} not found: {path}")
    df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if df.shape[1] < 2:
        raise SubmissionError(f"{path}: expected rows '<wav name>,<value>', got {df.shape[1]} "
                              "column(s)")
    df[0] = df[0].str.strip()
    return df


def _numeric(series: pd.Series, path: Path) -> np.ndarray:
    values = pd.to_numeric(series.str.strip(), errors="coerce")
    bad = series[values.isna()].tolist()
    if bad:
        raise SubmissionError(f"{path}: {len(bad)} non-numeric value(s): {_show(bad)}")
    return values.to_numpy(dtype=np.float64)


def write_submissions(out_dir, fused: pd.DataFrame) -> list[Path]:
    """Write every machine's and section's files of one system: ``fused`` has columns
    machine, name, score, decision (one row per test clip); sections come from the names,
    each into its own pair of files. Returns the paths written."""
    written = []
    sections = fused["name"].map(section_of)
    for (machine, section), rows in fused.groupby([fused["machine"], sections], sort=True):
        paths = write_submission(out_dir, machine, rows["name"].tolist(), rows["score"].to_numpy(),
                                 rows["decision"].to_numpy() if "decision" in rows else None,
                                 section=section)
        written += list(paths.values())
    return written


def read_submission(directory, machine: str, section: str = "00") -> pd.DataFrame:
    """Read one machine's submission: columns ``name, score`` (+ ``decision`` if present)."""
    score_path, decision_path = submission_paths(directory, machine, section)
    raw = _read_two_columns(score_path, f"anomaly score file of {machine!r}")
    _check_unique(raw[0].tolist(), str(score_path))
    out = pd.DataFrame({"name": raw[0], "score": _numeric(raw[1], score_path)})
    if decision_path.is_file():
        dec = _read_two_columns(decision_path, "decision file")
        _check_unique(dec[0].tolist(), str(decision_path))
        values = _numeric(dec[1], decision_path)
        if not np.isin(values, (0, 1)).all():
            raise SubmissionError(f"{decision_path}: decisions must be 0 or 1")
        dec_map = dict(zip(dec[0], values.astype(np.int64)))
        _match_names(out["name"].tolist(), list(dec_map), str(decision_path),
                     expected_what="anomaly score file")
        out["decision"] = [dec_map[n] for n in out["name"]]
    return out


def read_ground_truth(gt_dir, machine: str) -> pd.DataFrame:
    """Read the evaluator's ground truth of one machine.

    Layout: ``<gt_dir>/ground_truth_data/ground_truth_<machine>_section_00_test.csv``
    (``<wav>,<1 = anomaly>``), ``ground_truth_domain/...`` (``<wav>,<1 = target>``) and,
    optional, ``ground_truth_attributes/...`` (``<wav>,[hidden name,]<full name>``).
    Returns columns ``name, label, is_target, domain`` (+ ``full_name``), in file order.
    """
    gt_dir = Path(gt_dir)
    fname = _GT_FILE.format(machine=machine)
    data_path = gt_dir / "ground_truth_data" / fname
    domain_path = gt_dir / "ground_truth_domain" / fname
    data = _read_two_columns(data_path, f"ground truth labels of {machine!r}")
    dom = _read_two_columns(domain_path, f"ground truth domains of {machine!r}")
    _check_unique(data[0].tolist(), str(data_path))
    _check_unique(dom[0].tolist(), str(domain_path))
    _match_names(data[0].tolist(), dom[0].tolist(), str(domain_path),
                 expected_what=str(data_path))
    labels = _numeric(data[1], data_path)
    domains = dict(zip(dom[0], _numeric(dom[1], domain_path)))
    out = pd.DataFrame({"name": data[0]})
    out["label"] = _as_binary(labels, f"{data_path} label", "1", "0")
    out["is_target"] = _as_binary(np.array([domains[n] for n in out["name"]]),
                                  f"{domain_path} domain", "1", "0")
    out["domain"] = np.where(out["is_target"] == 1, "target", "source")
    attr_path = gt_dir / "ground_truth_attributes" / fname
    if attr_path.is_file():
        attrs = _read_two_columns(attr_path, "attributes")
        last = attrs.iloc[:, -1].str.strip().str.replace(r"\.wav$", "", regex=True)
        full = dict(zip(attrs[0], last))
        out["full_name"] = [full.get(n) for n in out["name"]]
    return out


def _match_names(expected: Sequence[str], given: Sequence[str], where: str,
                 expected_what: str = "ground truth") -> None:
    """Raise naming the names missing from ``given`` and the extra ones it has."""
    exp, got = set(expected), set(given)
    missing = [n for n in expected if n not in got]
    extra = [n for n in given if n not in exp]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} name(s) of the {expected_what} are missing: "
                         f"{_show(missing)}")
        if extra:
            parts.append(f"{len(extra)} extra name(s) not in the {expected_what}: "
                         f"{_show(extra)}")
        raise SubmissionError(f"{where}: " + "; ".join(parts))


def join_ground_truth(submission: pd.DataFrame, ground_truth: pd.DataFrame,
                      where: str = "submission") -> pd.DataFrame:
    """Ground truth rows with the submitted ``score`` (and ``decision``) joined by wav name.

    Fails naming duplicated, missing and extra names; never drops or invents a clip.
    """
    _check_unique(submission["name"].astype(str).tolist(), where)
    _check_unique(ground_truth["name"].astype(str).tolist(), "ground truth")
    _match_names(ground_truth["name"].astype(str).tolist(),
                 submission["name"].astype(str).tolist(), where)
    cols = [c for c in ("score", "decision") if c in submission.columns]
    sub = submission.assign(name=submission["name"].astype(str)).set_index("name")[cols]
    return ground_truth.join(sub, on="name")


def _detection_metrics(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 as the official evaluator computes them (eps-guarded)."""
    eps = np.finfo(float).eps
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y == 0)))
    fn = float(np.sum((pred == 0) & (y == 1)))
    precision = tp / max(tp + fp, eps)
    recall = tp / max(tp + fn, eps)
    f1 = 2.0 * precision * recall / max(precision + recall, eps)
    return precision, recall, f1


def submission_machines(score_dir) -> list[str]:
    """Machines that have an anomaly-score file in ``score_dir``, sorted."""
    pattern = re.compile(r"^anomaly_score_(.+)_section_00_test\.csv$")
    return sorted(m.group(1) for p in Path(score_dir).iterdir()
                  if p.is_file() and (m := pattern.match(p.name)))


def evaluate_submission(score_dir, gt_root, machines: Sequence[str] | None = None) -> pd.DataFrame:
    """Evaluate submission files against the official ground truth, as the evaluator does.

    ``machines`` defaults to every machine with an anomaly-score file in ``score_dir``
    (sorted, like the evaluator's output); each needs ground truth in ``gt_root``.
    Returns the :func:`evaluate_table` layout (Overall hmean = official score) plus, when
    decision files exist, the evaluator's precision/recall/F1 per domain (computed over
    the clips of that domain), columns ``precision_s, precision_t, recall_s, recall_t,
    F1_s, F1_t``.
    """
    score_dir = Path(score_dir)
    if machines is None:
        machines = submission_machines(score_dir) if score_dir.is_dir() else []
        if not machines:
            raise SubmissionError(f"no anomaly_score_<machine>_section_00_test.csv in {score_dir}")
    tables, detection = [], {}
    for machine in machines:
        gt = read_ground_truth(gt_root, machine)
        sub = read_submission(score_dir, machine)
        joined = join_ground_truth(sub, gt, where=f"submission of {machine!r}")
        tables.append(pd.DataFrame({"machine": machine, "name": joined["name"],
                                    "score": joined["score"], "label": joined["label"],
                                    "domain": joined["domain"]}))
        if "decision" in joined.columns:
            y, t, d = (joined[c].to_numpy() for c in ("label", "is_target", "decision"))
            ps, rs, fs = _detection_metrics(y[t == 0], d[t == 0])
            pt, rt, ft = _detection_metrics(y[t == 1], d[t == 1])
            detection[machine] = {"precision_s": ps, "precision_t": pt, "recall_s": rs,
                                  "recall_t": rt, "F1_s": fs, "F1_t": ft}
    table = evaluate_table(pd.concat(tables, ignore_index=True))
    if detection:
        det = pd.DataFrame.from_dict(detection, orient="index")
        det.loc[OVERALL] = det.mean()
        table = table.join(det)
    return table


# --------------------------------------------------------------------------- fast path

def fast_auc(y: np.ndarray, s: np.ndarray, max_fpr: float | None = None) -> float:
    """ROC AUC (or McClish pAUC at ``max_fpr``) of boolean labels ``y``, pure numpy.

    Equal to scikit-learn's ``roc_auc_score`` (ties included) without its input checks,
    for inner loops such as fusion-weight search; the reported numbers use
    :func:`machine_metrics`.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    if max_fpr is None or max_fpr == 1:
        return float(np.trapezoid(tpr, fpr))
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.r_[tpr[:stop], np.interp(max_fpr, x_interp, y_interp)]
    fpr = np.r_[fpr[:stop], max_fpr]
    area = float(np.trapezoid(tpr, fpr))
    min_area, max_area = 0.5 * max_fpr ** 2, max_fpr
    return 0.5 * (1 + (area - min_area) / (max_area - min_area))


def fast_machine_metrics(anomaly: np.ndarray, score: np.ndarray, target: np.ndarray,
                         max_fpr: float = MAX_FPR) -> tuple[float, float, float]:
    """(AUC_s, AUC_t, pAUC) from boolean arrays, as :func:`machine_metrics` computes them."""
    src = ~target | anomaly
    tgt = target | anomaly
    return (fast_auc(anomaly[src], score[src]), fast_auc(anomaly[tgt], score[tgt]),
            fast_auc(anomaly, score, max_fpr))

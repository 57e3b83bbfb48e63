"""Score-level fusion: label-free calibration, the report's four systems, weight selection.

Every branch score is z-normalised with the mean and standard deviation of that branch's
own leave-one-out bank self-scores (no labels needed), then branches are combined as a
weighted sum. Weights are chosen on development labels (as the report does) and frozen
into a JSON file; leave-one-machine-out selection gives the honest estimate beside it.

The tidy score table used throughout has one row per (machine, name, branch) with
columns ``machine, name, branch, score, is_self`` (``is_self`` True for bank self-scores),
plus for test rows ``domain`` and ``label`` (and optionally ``kind``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asdlib import atomic, metrics

#: The report's four submitted systems (SPEC section 6), as lists of branch names. "The
#: fine-grained branch" of Systems 1 and 2 is the selective aggregation (max over time in
#: each band: the localized one); System 3 adds the second, broad aggregation of the same
#: token evidence. (Chosen on the tuning data, demo seed 0: docs/EXPERIMENTS.md.)
SYSTEMS: dict[str, list[str]] = {
    "System 1": ["fine_selective"],
    "System 2": ["fine_selective", "subband3", "adabeam", "asp_knn", "beam_mean", "beam_max"],
    "System 3": ["fine_selective", "subband3", "adabeam", "asp_knn", "beam_mean", "beam_max",
                 "fine_broad"],
    "System 4": ["adabeam", "band_knn"],
}

#: Candidate weights tried per branch by the coordinate-ascent weight search. No zero: every
#: declared member branch of a system keeps a weight of at least the smallest value, so a
#: system is what the report says it is (the search may not drop a branch).
WEIGHT_GRID: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
#: How a system's weights are chosen: "search" (coordinate ascent over WEIGHT_GRID on the
#: development labels, as the report does) or "equal" (every member 1, no labels used).
WEIGHTINGS = ("search", "equal")
#: ``decision_result`` is 1 above this percentile of the machine's fused bank self-scores.
DECISION_PERCENTILE = 90.0

_STD_FLOOR = 1e-8


def calibrate(scores: pd.DataFrame) -> pd.DataFrame:
    """Z-normalise each (machine, branch) by its bank self-scores.

    Returns the test rows (``is_self`` False) and the self rows, both with a new column
    ``z``. A branch with no self-scores for a machine is an error, not a silent pass.
    """
    out = []
    for (machine, branch), group in scores.groupby(["machine", "branch"], sort=False):
        own = group.loc[group["is_self"], "score"].to_numpy(dtype=np.float64)
        if len(own) < 2:
            raise ValueError(
                f"branch {branch!r} on {machine!r} has {len(own)} bank self-scores; "
                "at least 2 are needed to calibrate it")
        mu, sd = own.mean(), max(own.std(), _STD_FLOOR)
        group = group.copy()
        group["z"] = (group["score"].to_numpy(dtype=np.float64) - mu) / sd
        out.append(group)
    return pd.concat(out, ignore_index=True)


def _wide(calibrated: pd.DataFrame, branches: list[str], is_self: bool) -> pd.DataFrame:
    """Pivot calibrated rows to one row per clip and one column per branch."""
    rows = calibrated[(calibrated["is_self"] == is_self) & calibrated["branch"].isin(branches)]
    missing = sorted(set(branches) - set(rows["branch"].unique()))
    if missing:
        raise KeyError(f"score table has no {'self' if is_self else 'test'} scores for "
                       f"branches {missing}")
    wide = rows.pivot_table(index=["machine", "name"], columns="branch", values="z",
                            aggfunc="first")
    wide = wide[branches]
    if not is_self and wide.isna().any().any():
        bad = wide[wide.isna().any(axis=1)].index[:5].tolist()
        raise ValueError(f"some test clips lack a score in some branch, e.g. {bad}")
    return wide


def fuse(calibrated: pd.DataFrame, weights: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weighted sum of calibrated branch scores.

    Returns ``(test, bank)``: test clips with columns machine, name, score (+ domain,
    label, kind when present) and the fused bank self-scores of the clips that have a
    self-score in every branch (machine, name, score).
    """
    branches = [b for b, w in weights.items() if w != 0] or list(weights)
    w = np.array([weights[b] for b in branches], dtype=np.float64)
    test_wide = _wide(calibrated, branches, is_self=False)
    test = test_wide.to_numpy() @ w
    meta_cols = [c for c in ("domain", "label", "kind") if c in calibrated.columns]
    meta = (calibrated[~calibrated["is_self"]]
            .drop_duplicates(["machine", "name"])
            .set_index(["machine", "name"])[meta_cols])
    test_df = test_wide.index.to_frame(index=False).assign(score=test)
    test_df = test_df.join(meta, on=["machine", "name"])
    bank_wide = _wide(calibrated, branches, is_self=True).dropna()
    bank_df = bank_wide.index.to_frame(index=False).assign(score=bank_wide.to_numpy() @ w)
    return test_df, bank_df


def official_of(test: pd.DataFrame) -> float:
    """Official pooled hmean of a fused test table (needs domain and label columns)."""
    table = metrics.evaluate_table(test)
    return float(table.loc["Overall", "hmean"])


class _Design:
    """Per machine: calibrated test scores (clips x branches), labels and domains.

    Prepared once so that trying a weight vector costs one matrix product and the AUCs.
    """

    def __init__(self, calibrated: pd.DataFrame, branches: list[str]):
        wide = _wide(calibrated, branches, is_self=False)
        meta = (calibrated[~calibrated["is_self"]].drop_duplicates(["machine", "name"])
                .set_index(["machine", "name"]).loc[wide.index])
        self.parts = []
        for machine in dict.fromkeys(wide.index.get_level_values(0)):
            sel = (wide.index.get_level_values(0) == machine)
            anomaly = metrics.labels_to_binary(meta["label"].to_numpy()[sel]).astype(bool)
            target = metrics.domains_to_binary(meta["domain"].to_numpy()[sel]).astype(bool)
            self.parts.append((machine, wide.to_numpy()[sel], anomaly, target))

    def official(self, w: np.ndarray, skip: str | None = None) -> float:
        values = []
        for machine, z, anomaly, target in self.parts:
            if machine != skip:
                values += metrics.fast_machine_metrics(anomaly, z @ w, target)
        return metrics.hmean(values)


def select_weights(calibrated: pd.DataFrame, branches: list[str],
                   grid: tuple[float, ...] = WEIGHT_GRID, rounds: int = 2,
                   design: _Design | None = None, skip: str | None = None) -> dict[str, float]:
    """Weights maximising the official score on labelled test clips (coordinate ascent).

    Starts from equal weights and changes one branch at a time over ``grid``; ties keep the
    earlier (simpler) value. A single branch always gets weight 1. ``skip`` leaves one
    machine out of the objective.
    """
    weights = np.ones(len(branches))
    if len(branches) == 1:
        return {branches[0]: 1.0}
    design = design or _Design(calibrated, branches)
    best = design.official(weights, skip)
    for _ in range(rounds):
        improved = False
        for i in range(len(branches)):
            for value in grid:
                if value == weights[i]:
                    continue
                trial = weights.copy()
                trial[i] = value
                if not trial.any():
                    continue
                score = design.official(trial, skip)
                if score > best + 1e-12:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return {b: float(v) for b, v in zip(branches, weights)}


def leave_one_machine_out(calibrated: pd.DataFrame, branches: list[str],
                          grid: tuple[float, ...] = WEIGHT_GRID
                          ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Honest estimate: each machine scored with weights selected on the other machines.

    Returns ``(test, bank, weights)``: the fused test table of all machines, their fused
    bank self-scores (each machine fused with its own left-out weights, so its decision
    threshold comes from the same weights as its scores) and the weights used per machine.
    """
    machines = list(dict.fromkeys(calibrated["machine"]))
    if len(machines) < 2:
        raise ValueError("leave-one-machine-out needs at least two machines")
    design = _Design(calibrated, branches)
    tests, banks, used = [], [], {}
    for m in machines:
        w = select_weights(calibrated, branches, grid, design=design, skip=m)
        test, bank = fuse(calibrated[calibrated["machine"] == m], w)
        tests.append(test)
        banks.append(bank)
        used[m] = w
    return pd.concat(tests, ignore_index=True), pd.concat(banks, ignore_index=True), used


def decisions(test: pd.DataFrame, bank: pd.DataFrame,
              percentile: float = DECISION_PERCENTILE) -> pd.Series:
    """0/1 decisions: 1 where the fused score exceeds the machine's bank percentile."""
    thresholds = bank.groupby("machine")["score"].quantile(percentile / 100.0)
    missing = sorted(set(test["machine"]) - set(thresholds.index))
    if missing:
        raise ValueError(f"no fused bank self-scores for machines {missing}")
    return (test["score"] > test["machine"].map(thresholds)).astype(int)


@dataclass
class FusionConfig:
    """Frozen fusion settings: per system the branch weights (applied unchanged on eval)."""

    weights: dict[str, dict[str, float]]
    decision_percentile: float = DECISION_PERCENTILE
    selected_on: str = ""
    notes: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        atomic.write_text(path, json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "FusionConfig":
        """Read a file written by :meth:`save`; unknown systems or branches are errors later."""
        data = json.loads(Path(path).read_text())
        return cls(**data)


def run_systems(calibrated: pd.DataFrame, systems: dict[str, list[str]] | None = None,
                frozen: FusionConfig | None = None, grid: tuple[float, ...] = WEIGHT_GRID,
                lomo: bool = True, weighting: str = "search") -> tuple[pd.DataFrame, FusionConfig]:
    """Fuse every system; returns the long table of fused test scores and the config.

    Output columns: machine, name, system, selection ("dev" = weights chosen on all
    development labels or taken from ``frozen``; "lomo" = leave-one-machine-out), score,
    decision (0/1 at the bank percentile), plus domain/label/kind when present.
    With ``frozen`` (an evaluation run) the weights are applied unchanged and no
    leave-one-machine-out estimate is made. ``weighting`` "equal" gives every member
    weight 1 (no label is used; the LOMO rows then equal the dev rows).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "equal":
        grid = (1.0,)
    systems = systems or SYSTEMS
    labelled = "label" in calibrated.columns and calibrated.loc[
        ~calibrated["is_self"], "label"].notna().all()
    if frozen is None and not labelled:
        raise ValueError("weights can only be selected on labelled data; pass a frozen "
                         "FusionConfig for an evaluation run")
    weights, parts = {}, []
    percentile = frozen.decision_percentile if frozen else DECISION_PERCENTILE
    for name, branches in systems.items():
        if frozen is not None:
            if name not in frozen.weights:
                raise KeyError(f"frozen fusion config has no weights for {name!r}")
            w = frozen.weights[name]
        else:
            w = select_weights(calibrated, branches, grid)
        weights[name] = w
        test, bank = fuse(calibrated, w)
        test["decision"] = decisions(test, bank, percentile).to_numpy()
        parts.append(test.assign(system=name, selection="dev"))
        if lomo and frozen is None and labelled and len(set(calibrated["machine"])) > 1:
            honest, honest_bank, _ = leave_one_machine_out(calibrated, branches, grid)
            honest["decision"] = decisions(honest, honest_bank, percentile).to_numpy()
            parts.append(honest.assign(system=name, selection="lomo"))
    config = frozen or FusionConfig(
        weights=weights, decision_percentile=percentile,
        selected_on=("development labels (official hmean), weights from "
                     f"{list(grid)}" if weighting == "search" else "equal weights (no labels)"))
    return pd.concat(parts, ignore_index=True), config

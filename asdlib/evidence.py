"""Where the evidence of a fault is kept or lost on its way through the encoder.

For a set of token views (the raw log-mel patches, the patch embedding before and after its
LayerNorm, each hidden state), every distance (cosine, Euclidean), LDN on and off, and
every aggregation of the token map (mean of all, mean of the top 10 %, max over time per
band, mean of the top 3), `evidence_table` scores each test clip with the fine-grained
scorer (`asdlib.branches.FinePatchScorer`) and reports the official score and the AUC per
fault kind. Notebook 04 shows it for the stored views; ``benchmarks/evidence.py`` for every
layer and for raw log-mel patches at two time resolutions.

A view is a `asdlib.features.ClipFeatures` per split (only ``tokens``, ``n_time``,
``domain``, ``names`` are used).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asdlib import metrics
from asdlib.branches import (FineParams, FinePatchScorer, aggregate_band_max,
                             aggregate_top_fraction, aggregate_topk)
from asdlib.features import ClipFeatures

#: Aggregations of a (T', 8) token map into a clip score.
AGGREGATIONS = {
    "mean": lambda maps: aggregate_top_fraction(maps, 100.0),
    "top 10 %": lambda maps: aggregate_top_fraction(maps, 10.0),
    "band max": aggregate_band_max,
    "top 3": lambda maps: aggregate_topk(maps, 3),
}
KINDS = ("transient", "narrowband", "broad")
#: Training clips per machine the diagnosis keeps at most: it fits the scorer once per view and
#: distance, so at DCASE size (1000 clips) the full bank would cost four times the branches.
BANK_CLIPS = 200


def clip_features(grids: list[np.ndarray], domains, names) -> ClipFeatures:
    """ClipFeatures from per-clip token grids (T'_i, 8, D), zero-padded to the longest."""
    t_max = max(len(g) for g in grids)
    tokens = np.zeros((len(grids), t_max, 8, grids[0].shape[-1]), dtype=np.float32)
    for i, g in enumerate(grids):
        tokens[i, :len(g)] = g
    n_time = np.array([len(g) for g in grids])
    utt = np.stack([g.mean((0, 1)) for g in grids]).astype(np.float32)
    return ClipFeatures(tokens=tokens, n_time=n_time, utt=utt, asp=None, band_att=None,
                        domain=np.asarray(domains, dtype=object), names=np.asarray(names, dtype=object))


def bank_and_test(grids: list[np.ndarray], rows: pd.DataFrame) -> tuple[ClipFeatures, ClipFeatures]:
    """One machine's per-clip token grids (in the order of ``rows``: columns split, domain,
    name) as (training clips, test clips) `ClipFeatures`."""
    train = (rows["split"] == "train").to_numpy()

    def pick(keep: np.ndarray) -> ClipFeatures:
        return clip_features([g for g, k in zip(grids, keep) if k], rows["domain"][keep],
                             rows["name"][keep])

    return pick(train), pick(~train)


def score_view(bank: ClipFeatures, test: ClipFeatures, metric: str, ldn: bool,
               k_ldn: int = 16) -> dict[str, np.ndarray]:
    """{aggregation: (M,) clip scores} of one view, distance and LDN setting."""
    scorer = FinePatchScorer(FineParams(metric=metric, ldn=ldn, k_ldn=k_ldn)).fit(bank)
    maps = scorer.maps(test)
    return {name: agg(maps) for name, agg in AGGREGATIONS.items()}


def summarise(scores: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Official score, AUC_s, AUC_t and AUC per kind (%) of every ``by`` group of a tidy
    table (machine, name, score, domain, label, and kind where the data has one)."""
    kind_column = "kind" if "kind" in scores.columns else None   # NaN per kind without it
    rows = []
    for key, group in scores.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        overall = metrics.evaluate_table(group, kind_column=kind_column).loc["Overall"]
        row = dict(zip(by, key), official=overall["hmean"], AUC_s=overall["AUC_s"],
                   AUC_t=overall["AUC_t"])
        row.update({kind: overall.get(f"AUC[{kind}]") for kind in KINDS})
        rows.append(row)
    out = pd.DataFrame(rows)
    numbers = [c for c in out.columns if c not in by]
    out[numbers] = out[numbers].astype(float) * 100
    return out


def evidence_table(views: dict, test_meta: pd.DataFrame,
                   metrics_: tuple[str, ...] = ("cosine", "euclidean"),
                   ldn: tuple[bool, ...] = (False, True)) -> pd.DataFrame:
    """Official score and AUC per kind (%) for every view x distance x LDN x aggregation.

    views: {view name: {machine: (bank ClipFeatures, test ClipFeatures)}};
    test_meta: the test clips' machine, name, domain, label, kind.
    """
    rows = []
    for view, per_machine in views.items():
        for machine, (bank, test) in per_machine.items():
            for metric in metrics_:
                for use_ldn in ldn:
                    for agg, s in score_view(bank, test, metric, use_ldn).items():
                        rows.append(pd.DataFrame({"view": view, "metric": metric,
                                                  "ldn": use_ldn, "aggregation": agg,
                                                  "machine": machine, "name": test.names,
                                                  "score": s}))
    scores = pd.concat(rows, ignore_index=True).merge(test_meta, on=["machine", "name"])
    return summarise(scores, ["view", "metric", "ldn", "aggregation"])


def bank_rows(domain: np.ndarray, at_most: int | None) -> np.ndarray:
    """Rows of a training bank the diagnosis keeps: every target clip, and source clips evenly
    spread over the bank's order up to ``at_most`` in all (all rows when the bank is smaller)."""
    rows = np.arange(len(domain))
    if at_most is None or len(rows) <= at_most:
        return rows
    target = rows[domain == "target"]
    source = rows[domain != "target"]
    n_source = max(at_most - len(target), 0)
    picked = source[np.linspace(0, len(source) - 1, n_source).round().astype(int)] if n_source else source[:0]
    return np.sort(np.concatenate([target, picked]))


def store_views(store, table: pd.DataFrame, channel: str = "near",
                layers=(-1, "embed"), bank_clips: int | None = BANK_CLIPS) -> dict:
    """{layer name: {machine: (bank, test)}} of a run's feature store, for `evidence_table`.

    The bank keeps at most ``bank_clips`` training clips per machine (`bank_rows`; None: all).
    """
    names = {-1: "final layer", "embed": "embed (before LayerNorm)"}
    views: dict = {}
    for layer in layers:
        for machine in dict.fromkeys(table["machine"]):
            bank = store.load(machine, "train", layer=layer, channel=channel)
            bank = bank.subset(bank_rows(np.asarray(bank.domain), bank_clips))
            test = store.load(machine, "test", layer=layer, channel=channel)
            views.setdefault(names.get(layer, f"hidden {layer}"), {})[machine] = (bank, test)
    return views


def findings(table: pd.DataFrame) -> list[str]:
    """Sentences read off an `evidence_table` result: per fault kind the best setting, and
    for the transients what the LayerNorm and the cosine cost (max over time per band)."""
    out = []
    for kind in KINDS:
        if kind in table and table[kind].notna().any():
            best = table.loc[table[kind].astype(float).idxmax()]
            out.append(f"{kind}: best {best[kind]:.1f} ({best['view']}, {best['metric']}, "
                       f"LDN {'on' if best['ldn'] else 'off'}, {best['aggregation']})")
    rows = table[(table["aggregation"] == "band max") & table["ldn"]]
    transient = {(r.view, r.metric): r.transient for r in rows.itertuples()}
    ours = transient.get(("embed (before LayerNorm)", "euclidean"))
    for key, what in ((("final layer", "cosine"), "the final layer with a cosine distance"),
                      (("embed (before LayerNorm)", "cosine"), "the same tokens with a cosine")):
        if ours is not None and key in transient:
            out.append(f"transient AUC (band max, LDN): {ours:.1f} with the patch embedding "
                       f"before its LayerNorm and a Euclidean distance, {transient[key]:.1f} "
                       f"with {what}")
    return out

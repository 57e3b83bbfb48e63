"""Variants of the token views tried for the localized-views issue, on a run's stored features.

Fine-grained scorer (Euclidean, k' = 32) on the patch embedding before its LayerNorm:
as stored (the default), LDN off, each dimension standardised by the band bank's mean and
spread, and that standardised embedding concatenated with the standardised final layer
(two depths scored together, each scaled by 1/sqrt(D)); five aggregations each (the
fifth pools the bands at each instant before the maximum over time). Then the
clip-level and sub-band branches (utt_knn, band_knn, beam_max, adabeam) on the final layer
(the default) and on the patch embedding (cosine and Euclidean). Official score and AUC
per fault kind (%); the same with the patch embedding minus each clip's temporal median per
band (deviation tokens), and fine_selective with one bank per domain; and the transient AUC
within each machine and domain. Run after ``make run`` (needs the run's feature store)::

    PYTHONPATH=. python benchmarks/token_variants.py results/demo

About 3 minutes on the demo (2 cores). Writes ``<run>/04_patch/token_variants.csv`` and
``token_variants_transient_by_domain.csv`` beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asdlib import evidence, experiment, scoring  # noqa: E402
from asdlib.branches import (FineParams, FinePatchScorer, aggregate_band_max,  # noqa: E402
                             aggregate_top_fraction, aggregate_topk)
from asdlib.features import EMBED, ClipFeatures  # noqa: E402

def time_max_of_band_mean(maps: np.ndarray) -> np.ndarray:
    """(M, T', 8) -> (M,): the mean over bands at each time, its maximum over time; a
    broadband click raises every band at one instant, which this pools."""
    import warnings

    with warnings.catch_warnings():       # padded time steps are all-NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmean(np.where(np.isfinite(maps), maps, np.nan), axis=2)   # (M, T')
        return np.nanmax(profile, axis=1).astype(np.float32)


AGGREGATIONS = {"band max": aggregate_band_max, "top 3": lambda m: aggregate_topk(m, 3),
                "top 8": lambda m: aggregate_topk(m, 8),
                "top 10 %": lambda m: aggregate_top_fraction(m, 10.0),
                "time max of band mean": time_max_of_band_mean}


def with_tokens(f: ClipFeatures, tokens: np.ndarray) -> ClipFeatures:
    return ClipFeatures(tokens=tokens, n_time=f.n_time, utt=f.utt, asp=None, band_att=None,
                        domain=f.domain, names=f.names, hop_frames=f.hop_frames)


def standardised(bank: ClipFeatures, test: ClipFeatures) -> tuple[ClipFeatures, ClipFeatures]:
    """Each (band, dimension) standardised by the bank's valid tokens (spread floored at
    1e-3 of the band's mean spread)."""
    x = np.asarray(bank.tokens)[bank.valid_time()].astype(np.float64)      # (Nv, 8, D)
    mu, sd = x.mean(0), x.std(0)
    sd = np.maximum(sd, 1e-3 * sd.mean(-1, keepdims=True))
    z = lambda t: ((np.asarray(t, np.float64) - mu) / sd).astype(np.float32)  # noqa: E731
    return with_tokens(bank, z(bank.tokens)), with_tokens(test, z(test.tokens))


def deviation(f: ClipFeatures) -> ClipFeatures:
    """Each clip's tokens minus the median over its valid time of its band's tokens: what
    changes within the clip (a short event), without the clip's stationary condition."""
    tokens = np.asarray(f.tokens, dtype=np.float32).copy()
    for i, n in enumerate(f.n_time):
        tokens[i, :n] -= np.median(tokens[i, :n], axis=0)
    return with_tokens(f, tokens)


def concatenated(*pairs) -> tuple[ClipFeatures, ClipFeatures]:
    """Token-wise concatenation of views (same clips), each scaled by 1/sqrt(D)."""
    def cat(side):
        return np.concatenate([np.asarray(p[side].tokens) / np.sqrt(p[side].tokens.shape[-1])
                               for p in pairs], -1)
    return with_tokens(pairs[0][0], cat(0)), with_tokens(pairs[0][1], cat(1))


def fine_variants(store, table) -> pd.DataFrame:
    rows = []
    for machine in dict.fromkeys(table["machine"]):
        embed = tuple(store.load(machine, s, layer=EMBED) for s in ("train", "test"))
        final = tuple(store.load(machine, s, layer=-1) for s in ("train", "test"))
        embed_z, final_z = standardised(*embed), standardised(*final)
        variants = {"embed (default)": (embed, True), "embed, LDN off": (embed, False),
                    "embed standardised": (embed_z, True),
                    "embed standardised, LDN off": (embed_z, False),
                    "embed + final, standardised": (concatenated(embed_z, final_z), True),
                    "embed, deviation from the clip's median": (
                        (deviation(embed[0]), deviation(embed[1])), True)}
        for name, ((bank, test), ldn) in variants.items():
            maps = FinePatchScorer(FineParams(ldn=ldn)).fit(bank).maps(test)
            for agg, fn in AGGREGATIONS.items():
                rows.append(pd.DataFrame({"view": name, "aggregation": agg, "machine": machine,
                                          "name": test.names, "score": fn(maps)}))
        print(f"{machine}: fine-grained variants done", flush=True)
    return pd.concat(rows, ignore_index=True)


def clip_variants(store, table) -> pd.DataFrame:
    specs = []
    for branch in ("utt_knn", "band_knn", "beam_max", "adabeam"):
        specs += [scoring.BranchSpec(branch, {}, f"{branch}, final layer (default)"),
                  scoring.BranchSpec(branch, {}, f"{branch}, embed, cosine", layer=EMBED),
                  scoring.BranchSpec(branch, {"metric": "euclidean"},
                                     f"{branch}, embed, Euclidean", layer=EMBED)]
    specs.append(scoring.BranchSpec("fine_selective", {"domain": "separate"},
                                    "fine_selective, one bank per domain", layer=EMBED))
    scores = scoring.score_run(store, table, specs, progress=False)
    scores = scores[~scores["is_self"]]
    return scores.rename(columns={"branch": "view"}).assign(aggregation="clip")


def transient_within_domain(scores: pd.DataFrame) -> pd.DataFrame:
    """AUC (%) of the transient anomalies against the normals of the same machine and
    domain, for every view x aggregation (columns) and (machine, domain) (rows)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    keys = ["view", "aggregation", "machine", "domain"]
    for key, g in scores.groupby(keys, sort=False):
        pick = g[(g["label"] == "normal") | (g["kind"] == "transient")]
        if pick["label"].nunique() == 2:
            rows.append((*key, 100 * roc_auc_score(pick["label"] != "normal", pick["score"])))
    return pd.DataFrame(rows, columns=[*keys, "auc"]).pivot_table(
        index=["machine", "domain"], columns=["view", "aggregation"], values="auc", sort=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = experiment.Run.open(args.run_dir)
    table, store = run.clip_table(), run.feature_store()
    meta = table[table["split"] == "test"][["machine", "name", "domain", "label", "kind"]]
    fine = fine_variants(store, table).merge(meta, on=["machine", "name"])
    clip = clip_variants(store, table)
    result = evidence.summarise(pd.concat([fine, clip], ignore_index=True),
                                ["view", "aggregation"])
    out = Path(args.out) if args.out else Path(args.run_dir) / "04_patch" / "token_variants.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.round(2).to_csv(out, index=False)
    pd.set_option("display.width", 200)
    print(result.round(1).to_string(index=False))
    within = transient_within_domain(pd.concat([fine, clip[fine.columns]], ignore_index=True))
    within.round(2).to_csv(out.with_name("token_variants_transient_by_domain.csv"))
    print("transient AUC within each domain (%):")
    print(within.round(1).to_string())
    print(f"written {out}")


if __name__ == "__main__":
    main()

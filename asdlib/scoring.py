"""Running branches over every machine of a run, and the tidy score tables they produce.

A score table has one row per (machine, name, branch): ``score``, ``is_self`` (True for
leave-one-out bank self-scores) and, for test clips, ``domain``, ``label``, ``kind``.
Notebooks 03-05 write one each (``scores.csv``); fusion reads them all. The clip-level kNN
used to judge adaptation (and by the clip-level floor, `asdlib.floors`) lives here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asdlib import atomic, metrics

SCORE_STEPS = ("03_subband", "04_patch", "05_ldn")


@dataclass(frozen=True)
class BranchSpec:
    """A branch to run: registry name, parameter overrides, the column name of its scores,
    and the stored encoder layer its features come from (an index, or "embed": the patch
    embedding before its LayerNorm, `asdlib.features.EMBED`)."""

    branch: str
    params: dict = field(default_factory=dict)
    label: str | None = None
    layer: int | str = -1

    @property
    def name(self) -> str:
        return self.label or self.branch

    def record(self) -> dict:
        """Every parameter of the branch (defaults included) and its layer: what a score
        table's ``.params.json`` keeps."""
        from asdlib import branches as branch_lib

        return {"branch": self.branch, "layer": self.layer,
                **branch_lib.make_branch(self.branch, **self.params).params}


def _test_meta(table: pd.DataFrame, machine: str, names) -> pd.DataFrame:
    rows = table[(table["machine"] == machine) & (table["split"] == "test")]
    meta = rows.set_index("name")[[c for c in ("domain", "label", "kind") if c in rows]]
    missing = sorted(set(names) - set(meta.index))
    if missing:
        raise KeyError(f"{machine}: feature rows not in the clip table: {missing[:5]}")
    return meta.loc[list(names)].reset_index()


def score_machine(load, specs: list[BranchSpec], machine: str, table: pd.DataFrame,
                  log=None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Fit every branch on its bank and score the test clips of one machine.

    ``load(split, layer) -> ClipFeatures`` gives the features of a split at a stored layer.
    Returns the tidy rows of this machine and the localisation maps of the branches that
    keep them (branch name -> (M, T', 8)).
    """
    from asdlib import branches as branch_lib

    rows, maps, meta = [], {}, None
    for spec in specs:
        bank, test = load("train", spec.layer), load("test", spec.layer)
        if meta is None:
            meta = _test_meta(table, machine, test.names)
        branch = branch_lib.make_branch(spec.branch, **spec.params)
        branch.fit(bank)
        res = branch.score(test)
        own = np.asarray(branch.self_scores(), dtype=np.float64)
        keep = np.isfinite(own)
        rows.append(meta.assign(machine=machine, branch=spec.name,
                                score=np.asarray(res.scores, dtype=np.float64), is_self=False))
        rows.append(pd.DataFrame({"machine": machine, "name": np.asarray(bank.names)[keep],
                                  "branch": spec.name, "score": own[keep], "is_self": True}))
        if res.maps is not None:
            maps[spec.name] = np.asarray(res.maps)
        if log:
            log(f"{machine:>12s} {spec.name:<18s} {keep.sum():4d} self-scores")
    cols = ["machine", "name", "branch", "score", "is_self", "domain", "label", "kind"]
    out = pd.concat(rows, ignore_index=True)
    return out.reindex(columns=[c for c in cols if c in out.columns]), maps


def combine_channels(per_channel: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Score-level fusion of microphones: one score table per channel (same clips and
    branches) -> one table whose score is, per clip, the mean over channels of the score
    standardised by that channel's bank self-scores of the (machine, branch), or by its
    test scores where a branch keeps no self-scores (no label is used either way)."""
    keys = ["machine", "name", "branch", "is_self"]
    standardised = []
    for scores in per_channel.values():
        parts = []
        for _, group in scores.groupby(["machine", "branch"], sort=False):
            ref = group.loc[group["is_self"], "score"]
            ref = ref if len(ref) >= 2 else group.loc[~group["is_self"], "score"]
            z = (group["score"] - ref.mean()) / max(float(ref.std(ddof=0)), 1e-12)
            parts.append(group.assign(score=z))
        standardised.append(pd.concat(parts).set_index(keys))
    first = standardised[0]
    for other in standardised[1:]:
        if len(other) != len(first) or not other.index.sort_values().equals(
                first.index.sort_values()):
            raise ValueError("the channels' score tables cover different clips or branches: "
                             f"{sorted(per_channel)}")
    mean = sum(t["score"].reindex(first.index) for t in standardised) / len(standardised)
    return first.assign(score=mean).reset_index()[scores.columns]


def score_run(store, table: pd.DataFrame, specs: list[BranchSpec], channel: str = "near",
              maps_dir: Path | None = None, progress: bool = True,
              fit_dir: Path | None = None) -> pd.DataFrame:
    """Score every machine of the clip table from a feature store; maps saved as .npz.

    channel "both": near and far scored apart and combined (`combine_channels`); the maps
    saved are the near channel's. fit_dir: where the fine-grained branches' fits (bank
    densities and self maps) are stored and reused across runs
    (`asdlib.branches.stored_fits`; None: not stored)."""
    from functools import lru_cache

    if channel == "both":
        return combine_channels({
            "near": score_run(store, table, specs, "near", maps_dir, progress, fit_dir),
            "far": score_run(store, table, specs, "far", None, progress, fit_dir)})

    from asdlib.branches import stored_fits
    from asdlib.progress import track

    machines = list(dict.fromkeys(table["machine"]))
    parts = []
    for machine in track(machines, desc=f"scoring {len(specs)} branch(es)", unit="machines",
                         enabled=progress):
        load = lru_cache(maxsize=None)(
            lambda split, layer, m=machine: store.load(m, split, layer=layer, channel=channel))
        with stored_fits(fit_dir):
            rows, maps = score_machine(load, specs, machine, table)
        parts.append(rows)
        if maps_dir is not None and maps:
            test = load("test", next(s.layer for s in specs if s.name in maps))
            maps_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(maps_dir / f"{machine}.npz", names=np.asarray(test.names, dtype=str),
                                n_time=np.asarray(test.n_time),
                                hop_frames=np.int32(test.hop_frames),
                                **{k: v.astype(np.float16) for k, v in maps.items()})
    return pd.concat(parts, ignore_index=True)


def load_maps(maps_dir: Path, rows: pd.DataFrame, branch: str) -> list[np.ndarray]:
    """The localisation maps (valid time patches, 8) of ``branch`` for the test clips in
    ``rows`` (columns machine, name), as `score_run` saved them under ``maps_dir``."""
    out, cache = [], {}
    for machine, name in zip(rows["machine"], rows["name"]):
        if machine not in cache:
            cache[machine] = np.load(Path(maps_dir) / f"{machine}.npz")
        saved = cache[machine]
        i = list(saved["names"]).index(name)
        out.append(saved[branch][i, : saved["n_time"][i]].astype(np.float32))
    return out


def map_hop_frames(maps_dir: Path, machine: str) -> int:
    """fbank frames between the time steps of the maps `score_run` saved for ``machine``
    (16, the encoder's patch grid, for maps saved before the hop was recorded)."""
    from asdlib.audio import PATCH_FRAMES

    with np.load(Path(maps_dir) / f"{machine}.npz") as saved:
        return int(saved["hop_frames"]) if "hop_frames" in saved.files else PATCH_FRAMES


def branch_table(scores: pd.DataFrame, kinds: bool = True) -> pd.DataFrame:
    """Official metric of every branch: rows branch, columns AUC_s/AUC_t/pAUC/hmean (+kinds)."""
    out = {}
    test = scores[~scores["is_self"]]
    use_kind = kinds and "kind" in test and test["kind"].nunique() > 2
    for branch, rows in test.groupby("branch", sort=False):
        t = metrics.evaluate_table(rows, kind_column="kind" if use_kind else None)
        out[branch] = t.loc["Overall"]
    return pd.DataFrame(out).T


def domain_pair_table(scores: pd.DataFrame) -> pd.DataFrame:
    """`metrics.domain_pair_auc` of every branch, mean over machines: rows branch, columns
    Ns-As, Ns-At, Nt-As, Nt-At (normals of one domain against anomalies of one domain)."""
    out = {}
    test = scores[~scores["is_self"]]
    for branch, rows in test.groupby("branch", sort=False):
        per = [metrics.domain_pair_auc(g["label"], g["score"], g["domain"])
               for _, g in rows.groupby("machine", sort=False)]
        out[branch] = pd.DataFrame(per).mean()
    return pd.DataFrame(out).T[list(metrics.DOMAIN_PAIRS)]


def save_scores(scores: pd.DataFrame, path: Path, params: dict | None = None) -> None:
    """Write a tidy score table (and the branches' parameters beside it)."""
    atomic.write_text(path, scores.to_csv(index=False))
    if params is not None:
        atomic.write_text(path.with_suffix(".params.json"),
                          json.dumps(params, indent=2, sort_keys=True, default=str))


def load_scores(run, steps: tuple[str, ...] = SCORE_STEPS) -> pd.DataFrame:
    """All branch scores of a run's scoring steps; a branch name used twice is an error."""
    parts = []
    for step in steps:
        path = run.dir / step / "scores.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run step {step} first")
        parts.append(pd.read_csv(path, dtype={"name": str}))
    scores = pd.concat(parts, ignore_index=True)
    dup = scores.duplicated(["machine", "name", "branch", "is_self"])
    if dup.any():
        raise ValueError(f"branches scored twice: {sorted(scores.loc[dup, 'branch'].unique())}")
    return scores


# ---------------------------------------------------------------- clip-level kNN

def knn_scores(embeddings: np.ndarray, table: pd.DataFrame, branch: str) -> pd.DataFrame:
    """Cosine distance to the nearest normal training clip of the same machine.

    ``embeddings`` rows follow ``table``. Bank self-scores are leave-one-out.
    """
    from asdlib.knn import knn_search

    parts = []
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    for machine, rows in table.groupby("machine", sort=False):
        train = rows.index[rows["split"] == "train"]
        test = rows.index[rows["split"] == "test"]
        pos = table.index.get_indexer
        bank = emb[pos(train)]
        d_test, _ = knn_search(emb[pos(test)], bank, k=1)
        ids = np.arange(len(train))
        d_self, _ = knn_search(bank, bank, k=1, exclude_groups=ids, query_groups=ids)
        meta = ["machine", "name"] + [c for c in ("domain", "label", "kind") if c in table]
        t = table.loc[test, meta].assign(
            branch=branch, score=d_test[:, 0], is_self=False)
        s = table.loc[train, ["machine", "name"]].assign(branch=branch, score=d_self[:, 0],
                                                          is_self=True)
        parts += [t, s]
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------ branches per notebook

#: Notebook 03: utterance, attentive-pooled, band-preserving and sub-band branches.
SUBBAND_SPECS = [BranchSpec("utt_knn"), BranchSpec("asp_knn"), BranchSpec("band_knn"),
                 BranchSpec("beam_mean"), BranchSpec("beam_max"), BranchSpec("adabeam"),
                 BranchSpec("subband3")]
#: Notebook 04: fine-grained localized scoring (always LDN-calibrated), two aggregations of
#: the patch embedding before its LayerNorm, where tokens keep their scale.
PATCH_SPECS = [BranchSpec("fine_broad", layer="embed"), BranchSpec("fine_selective", layer="embed")]
#: The fine-grained branches' search (`RunConfig.fine_search`): the exact flat search, or
#: the approximate settings measured in benchmarks/speed_auc.py (docs/PERFORMANCE.md).
FINE_SEARCH = {"exact": {}, "pca": {"search_dim": 64}, "ivf": {"ivf_lists": 256, "ivf_probe": 4}}


def with_params(specs: list[BranchSpec], params: dict) -> list[BranchSpec]:
    """The same branches (names, layers) with ``params`` overriding their parameters."""
    return [BranchSpec(s.branch, {**s.params, **params}, s.label, s.layer) for s in specs]


def patch_specs(search: str = "exact") -> list[BranchSpec]:
    """Notebook 04's branches (`PATCH_SPECS`) with the search setting ``search``."""
    if search not in FINE_SEARCH:
        raise ValueError(f"fine search {search!r}: one of {list(FINE_SEARCH)}")
    return with_params(PATCH_SPECS, FINE_SEARCH[search])
#: Notebook 05: the clip-level kNN branches again, with LDN on.
LDN_SPECS = [BranchSpec("utt_knn", {"ldn": True}, "utt_knn+ldn"),
             BranchSpec("asp_knn", {"ldn": True}, "asp_knn+ldn"),
             BranchSpec("band_knn", {"ldn": True}, "band_knn+ldn")]


def utterance_embeddings(model, table: pd.DataFrame, channel: str = "near",
                         device: str = "cpu", batch_size: int = 16,
                         progress: bool = True) -> np.ndarray:
    """(clips, D) mean over the valid final-layer tokens of each clip (no feature store).

    Used to judge adaptation quickly (before vs after) without writing token grids; the
    batching (`asdlib.features.length_batches`, bounded like the store's by
    ``ExtractConfig.max_batch_seconds``) and the mean (`asdlib.features.masked_grid_mean`)
    are those of the feature store, in table order. The model is left in eval mode on
    ``device``.
    """
    import soundfile as sf

    from asdlib.features import ExtractConfig, encode_batches, length_batches, masked_grid_mean

    model = model.to(device).eval()
    out = None
    paths = table["path"].tolist()
    seconds = np.array([sf.info(str(p)).duration for p in paths])
    plan = length_batches(np.arange(len(paths)), seconds, batch_size,
                          ExtractConfig().max_batch_seconds)
    batches = encode_batches(model, paths, plan, channel=channel, device=device)
    from asdlib.progress import track

    for rows, grids, valid in track(batches, total=len(plan), desc="utterance embeddings",
                                    unit="batches", enabled=progress):
        emb = masked_grid_mean(grids[-1], valid)[1].cpu().numpy()
        if out is None:
            out = np.zeros((len(table), emb.shape[1]), dtype=np.float32)
        out[rows] = emb
    return out

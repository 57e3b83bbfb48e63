"""Scoring branches: one interface for every view of SPEC section 5.

```python
branch = make_branch("fine_broad", k_ldn=16)   # typed parameters: branch.config / .params
branch.fit(bank)                               # ClipFeatures of the normal train clips
res = branch.score(test)                       # BranchResult(scores (M,), maps, params)
self_scores = branch.self_scores()             # (N,) leave-one-out over the bank
```

Scores: higher = more anomalous. Distances (``metric``) are cosine (``1 - cos`` on
L2-normalised float32 vectors) or Euclidean (on the vectors as given, keeping a token's
scale), searched exactly with faiss (``asdlib.knn``). Each branch's parameters are one
frozen dataclass (`KnnParams`, `MultiViewParams`, `FineBroadParams`,
`FineSelectiveParams`): every default is defined there once. Every branch takes

- ``domain``: ``"union"`` (one bank of source + target clips) or ``"separate"``: one
  bank per domain; each domain's score is z-normalised with the mean / std of that
  bank's leave-one-out self-scores, and the clip score is the minimum over domains
  (maps then come from the domain attaining it). Bank self-scores in this mode are the
  same minimum, with the clip's own domain scored leave-one-out.
- ``ldn``, ``k_ldn`` (K), ``eps``, ``k_candidates`` (k'): local-density normalisation
  (``asdlib.ldn``); off by default on the clip-level branches (exact minimum over the
  bank when on), always on by default in the fine-grained branches (k' candidates). K is
  capped at half the smallest domain's bank size (`asdlib.ldn.capped_k`).
- ``metric``: "cosine" (clip-level default, the report's) or "euclidean" (fine-grained
  default: measured on the tuning data, a short event inside a patch raises the token's
  spread, which a cosine divides out).
- ``batch_size``, ``backend`` ("faiss" | "torch"), ``device``: search settings.

Branches (``BRANCHES``):

| name | descriptor | matching |
|---|---|---|
| utt_knn | ``utt`` (D) | nearest bank clip |
| asp_knn | ``asp`` (E) | nearest bank clip |
| band_knn | temporal mean per band, each band L2-normalised, concatenated / sqrt(8) (8D) | nearest bank clip (one for all bands); d = 1 - mean over bands of cos |
| beam_mean | temporal mean per band (8, D) | per band its nearest bank clip, mean over bands |
| beam_max | temporal max per band (8, D) | as beam_mean |
| adabeam | beam_mean + beam_max streams | each stream z-normalised by its leave-one-out self-scores, then ``combine`` (mean / max) |
| subband3 | mean, max, ``band_att`` views (8, D) | as adabeam over three views |
| fine_broad | every valid token (T', 8, D) | each token vs all bank tokens of its band (LDN); mean of the top ``q`` % tokens |
| fine_selective | as fine_broad | max over time per band, mean over bands (``mode="band_max"``) or mean of the top ``topk`` tokens |

Which encoder layer a branch reads is chosen where its features are loaded
(`asdlib.scoring.BranchSpec.layer`): the fine-grained branches read the patch embedding
before its LayerNorm (``"embed"``), the others the final layer.

The fine branches keep a localisation map ``(T', 8)`` per clip (the calibrated distance
of each token, NaN on padded time patches). ``fine_broad`` and ``fine_selective`` fitted
on the same bank with the same search / LDN settings share one ``FinePatchScorer`` (the
bank densities, self maps and the last test maps are computed once).

Fine-branch cost (1000 clips x 62 x 8 tokens, D = 768): the densities need every bank
token's K nearest tokens of other clips, an exact 62k x 62k search per band; it runs on
symmetric blocks (``asdlib.knn.knn_self``, half the matmul work) and keeps
``max(K, k')`` neighbours, which are also the leave-one-out candidates, so the self maps
of ALL bank clips come with it at no extra cost. Extra parameters: ``coreset`` (fraction
of the source tokens kept per band, greedy k-centre on a ``coreset_proj``-dim random
projection, ``seed``), ``n_self`` (with a coreset or exact LDN the self maps need their
own search: only ``n_self`` seeded clips get them, the others' self-scores are NaN;
None = all). Measured times: benchmarks/bench_branches.py.
"""

from __future__ import annotations

from asdlib.branches.base import Branch, BranchResult, z_stats
from asdlib.branches.clip import (AdaBeam, AspKnn, BandKnn, BeamMax, BeamMean, MultiViewBranch,
                                  SubBand3, UttKnn, VectorBranch, band_pool)
from asdlib.branches.params import (FineBroadParams, FineParams, FineSelectiveParams,
                                    KnnParams, MultiViewParams)
from asdlib.branches.patch import (FineBranch, FineBroad, FineSelective, aggregate_band_max,
                                   aggregate_top_fraction, aggregate_topk)
from asdlib.branches.token_scorer import FinePatchScorer, clear_scorer_cache, stored_fits

__all__ = ["BRANCHES", "AdaBeam", "AspKnn", "BandKnn", "BeamMax", "BeamMean", "Branch",
           "BranchResult", "FineBranch", "FineBroad", "FineBroadParams", "FineParams",
           "FinePatchScorer", "FineSelective", "FineSelectiveParams", "KnnParams",
           "MultiViewBranch", "MultiViewParams", "SubBand3", "UttKnn",
           "VectorBranch", "aggregate_band_max", "aggregate_top_fraction", "aggregate_topk",
           "band_pool", "clear_scorer_cache", "make_branch", "stored_fits", "z_stats"]

BRANCHES: dict[str, type[Branch]] = {
    cls.name: cls for cls in (UttKnn, AspKnn, BandKnn, BeamMean, BeamMax, AdaBeam, SubBand3,
                              FineBroad, FineSelective)
}


def make_branch(name: str, **params) -> Branch:
    """A new, unfitted branch ``name`` (a key of ``BRANCHES``) with ``params`` over its defaults."""
    if name not in BRANCHES:
        raise KeyError(f"unknown branch {name!r}; known: {sorted(BRANCHES)}")
    return BRANCHES[name](**params)

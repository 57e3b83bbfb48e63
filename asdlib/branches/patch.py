"""Token-level branches: the aggregations of the localisation maps of a fitted
`asdlib.branches.token_scorer.FinePatchScorer` into a clip score, and the two fine-grained
branches built on them (`asdlib.branches`)."""

from __future__ import annotations

import numpy as np

from asdlib.branches.base import Branch
from asdlib.branches.params import FineBroadParams, FineParams, FineSelectiveParams
from asdlib.branches.token_scorer import FinePatchScorer, shared_scorer

# ----------------------------------------------------------------------------- aggregation

def aggregate_top_fraction(maps: np.ndarray, q: float) -> np.ndarray:
    """(M, T', 8) -> (M,): mean of the top ``q`` % valid (non-NaN) tokens of each map
    (at least one token; q = 100 is the mean of all). NaN when a map has none."""
    flat = maps.reshape(len(maps), -1)
    count = np.isfinite(flat).sum(1)
    vals = -np.sort(-np.where(np.isfinite(flat), flat, -np.inf), axis=1)   # descending
    take = np.clip(np.ceil(count * q / 100.0).astype(int), 1, None)
    csum = np.cumsum(np.where(np.isfinite(vals), vals, 0.0), axis=1, dtype=np.float64)
    rows = np.arange(len(flat))
    out = csum[rows, np.minimum(take, flat.shape[1]) - 1] / take
    return np.where(count > 0, out, np.nan).astype(np.float32)


def aggregate_band_max(maps: np.ndarray) -> np.ndarray:
    """(M, T', 8) -> (M,): max over valid time within each band, mean over bands."""
    filled = np.where(np.isfinite(maps), maps, -np.inf).max(1)              # (M, 8)
    out = np.where(np.isfinite(filled), filled, np.nan).mean(1)
    return out.astype(np.float32)


def aggregate_topk(maps: np.ndarray, k: int) -> np.ndarray:
    """(M, T', 8) -> (M,): mean of the ``k`` largest valid token values (fewer if fewer)."""
    flat = maps.reshape(len(maps), -1)
    count = np.isfinite(flat).sum(1)
    vals = -np.sort(-np.where(np.isfinite(flat), flat, -np.inf), axis=1)[:, :k]
    take = np.minimum(count, k)
    s = np.where(np.isfinite(vals), vals, 0.0).sum(1, dtype=np.float64)
    return np.where(take > 0, s / np.maximum(take, 1), np.nan).astype(np.float32)


class FineBranch(Branch):
    """Fine-grained localized scoring (token vs same-band patch bank); maps kept."""

    Params = FineParams

    def _aggregate(self, maps: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit_core(self, bank):
        return shared_scorer(bank, self.config)

    def _core_score(self, scorer, feats):
        maps = scorer.maps(feats)
        return self._aggregate(maps), maps

    def _core_self(self, scorer):
        return self._aggregate(scorer.self_maps)

    @property
    def scorer(self) -> FinePatchScorer:
        """The FinePatchScorer of the (union) bank, for inspection (rho, self maps)."""
        if self._parts is None:
            raise RuntimeError("call fit(bank) first")
        return self._parts[0].core


class FineBroad(FineBranch):
    """fine_broad: mean of the top ``q`` % calibrated token distances (q = 100: all)."""
    name = "fine_broad"
    Params = FineBroadParams

    def _aggregate(self, maps):
        return aggregate_top_fraction(maps, self.config.q)


class FineSelective(FineBranch):
    """fine_selective: max over time per band then mean over bands (mode="band_max"), or
    the mean of the ``topk`` largest token distances (mode="topk")."""
    name = "fine_selective"
    Params = FineSelectiveParams

    def _aggregate(self, maps):
        if self.config.mode == "band_max":
            return aggregate_band_max(maps)
        return aggregate_topk(maps, self.config.topk)

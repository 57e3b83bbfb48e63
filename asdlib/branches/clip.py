"""Clip-level and sub-band branches: one descriptor per clip (or per band and clip),
matched against the bank clips (`asdlib.branches`)."""

from __future__ import annotations

import numpy as np

from asdlib.branches.base import Branch, z_stats
from asdlib.branches.params import KnnParams, MultiViewParams
from asdlib.features import ClipFeatures
from asdlib.knn import as_float32, knn_search, knn_self
from asdlib.ldn import capped_k, density_from_distances, ldn_scores

# ----------------------------------------------------------------------------- descriptors

def band_pool(feats: ClipFeatures, how: str) -> np.ndarray:
    """Temporal pooling per band over valid time patches: (N, T', 8, D) -> (N, 8, D) float32.

    how: "mean" or "max". One clip at a time, accumulated in float32 (no float32 copy of
    the token array).
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    n, t, b, d = feats.tokens.shape
    n_time = np.asarray(feats.n_time)
    if n and (n_time.min() < 1 or n_time.max() > t):
        raise ValueError(f"n_time must be in [1, {t}]")
    out = np.empty((n, b, d), dtype=np.float32)
    reduce = np.add.reduce if how == "mean" else np.maximum.reduce
    for i in range(n):
        reduce(feats.tokens[i, :n_time[i]], axis=0, dtype=np.float32, out=out[i])
    if how == "mean":
        out /= n_time[:, None, None].astype(np.float32)
    return out


def _views(desc: np.ndarray, metric: str) -> np.ndarray:
    """(N, V, E) -> (V, N, E) float32, every (clip, view) vector L2-normalised for cosine."""
    n, v, e = desc.shape
    flat = as_float32(desc.reshape(n * v, e), normalize=metric == "cosine")
    return flat.reshape(n, v, e).transpose(1, 0, 2).copy()


def _view_utt(f: ClipFeatures) -> np.ndarray:
    return np.asarray(f.utt)[:, None, :]


def _view_asp(f: ClipFeatures) -> np.ndarray:
    if f.asp is None:
        raise ValueError("asp_knn needs ClipFeatures.asp (the ASP-head embedding), got None")
    return np.asarray(f.asp)[:, None, :]


def _view_band_flat(f: ClipFeatures) -> np.ndarray:
    # each band normalised, then concatenated and scaled so the whole vector has norm 1:
    # 1 - cos(concat) = mean over bands of (1 - cos_band); every band weighs the same.
    pooled = band_pool(f, "mean")
    n, b, d = pooled.shape
    flat = as_float32(pooled.reshape(n * b, d), normalize=True).reshape(n, b * d) / np.sqrt(b)
    return flat[:, None, :]


def _view_band_mean(f: ClipFeatures) -> np.ndarray:
    return band_pool(f, "mean")


def _view_band_max(f: ClipFeatures) -> np.ndarray:
    return band_pool(f, "max")


def _view_band_att(f: ClipFeatures) -> np.ndarray:
    if f.band_att is None:
        raise ValueError("subband3 needs ClipFeatures.band_att (band-attentive vectors), got None")
    return np.asarray(f.band_att, dtype=np.float32)


class _VectorCore:
    """Per-view nearest-bank-clip matching of clip descriptors.

    desc (N, V, E): view v of a query is matched against view v of the bank clips; the
    V per-view distances (raw, or LDN ratios) are averaged. ``domains`` (N,): the bank
    clips' domains, which cap LDN's K.
    """

    def __init__(self, desc: np.ndarray, p: KnnParams, domains):
        self.p = p
        self.bank = _views(np.asarray(desc, dtype=np.float32), p.metric)       # (V, N, E)
        self.k = capped_k(p.k_ldn, domains)
        self.rho = [self._density(v) for v in self.bank] if p.ldn else None

    def _density(self, bank_v: np.ndarray) -> np.ndarray:
        dist, _ = knn_self(bank_v, self.k, normalize=False, **self.p.search())
        return density_from_distances(dist, self.k)

    def _match(self, q: np.ndarray, v: int, loo: bool) -> np.ndarray:
        p = self.p
        g = np.arange(len(self.bank[v])) if loo else None
        if p.ldn:
            s, _ = ldn_scores(q, self.bank[v], self.rho[v], p.eps, p.k_candidates,
                              g, g, normalize=False, **p.search())
            return s
        dist, _ = knn_search(q, self.bank[v], 1, g, g, normalize=False, **p.search())
        return dist[:, 0]

    def score(self, desc: np.ndarray) -> np.ndarray:
        """desc (M, V, E) -> (M,) mean over views of the per-view match score."""
        q = _views(np.asarray(desc, dtype=np.float32), self.p.metric)
        return np.mean([self._match(q[v], v, False) for v in range(len(q))], axis=0).astype(np.float32)

    def self_scores(self) -> np.ndarray:
        """(N,) leave-one-out: each bank clip against the other bank clips."""
        return np.mean([self._match(self.bank[v], v, True) for v in range(len(self.bank))],
                       axis=0).astype(np.float32)


class VectorBranch(Branch):
    """Nearest-bank-clip matching of one descriptor per clip (or per band)."""

    Params = KnnParams
    view = staticmethod(_view_utt)

    def _fit_core(self, bank):
        return _VectorCore(self.view(bank), self.config, bank.domain)

    def _core_score(self, core, feats):
        return core.score(self.view(feats)), None

    def _core_self(self, core):
        return core.self_scores()


class UttKnn(VectorBranch):
    """utt_knn: mean token (D,), nearest bank clip."""
    name = "utt_knn"
    view = staticmethod(_view_utt)


class AspKnn(VectorBranch):
    """asp_knn: ASP-head embedding (E,), nearest bank clip."""
    name = "asp_knn"
    view = staticmethod(_view_asp)


class BandKnn(VectorBranch):
    """band_knn: per-band temporal means, band-normalised and concatenated (8D,), one
    nearest bank clip for all bands."""
    name = "band_knn"
    view = staticmethod(_view_band_flat)


class BeamMean(VectorBranch):
    """beam_mean: temporal mean per band (8, D); per band its own nearest bank clip, mean
    over bands."""
    name = "beam_mean"
    view = staticmethod(_view_band_mean)


class BeamMax(VectorBranch):
    """beam_max: temporal max per band (8, D); as beam_mean."""
    name = "beam_max"
    view = staticmethod(_view_band_max)


class MultiViewBranch(Branch):
    """Several per-band streams, each z-normalised with its own leave-one-out self-score
    statistics, combined by mean or max (``combine``)."""

    Params = MultiViewParams
    views: tuple = ()

    def _combine(self, zs: list[np.ndarray]) -> np.ndarray:
        z = np.stack(zs)
        return (z.mean(0) if self.config.combine == "mean" else z.max(0)).astype(np.float32)

    def _fit_core(self, bank):
        streams = []
        for view in self.views:
            core = _VectorCore(view(bank), self.config, bank.domain)
            own = core.self_scores()
            streams.append((view, core, own, *z_stats(own)))
        return streams

    def _core_score(self, streams, feats):
        return self._combine([(c.score(v(feats)) - mu) / sd for v, c, _, mu, sd in streams]), None

    def _core_self(self, streams):
        return self._combine([(own - mu) / sd for _, _, own, mu, sd in streams])


class AdaBeam(MultiViewBranch):
    """adabeam: beam_mean and beam_max streams, each calibrated, then mean / max."""
    name = "adabeam"
    views = (_view_band_mean, _view_band_max)


class SubBand3(MultiViewBranch):
    """subband3: temporal mean, temporal max and band-attentive per-band matches, each
    calibrated, then mean / max."""
    name = "subband3"
    views = (_view_band_mean, _view_band_max, _view_band_att)

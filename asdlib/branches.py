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

import dataclasses
import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from asdlib.features import ClipFeatures
from asdlib.knn import METRICS, as_float32, greedy_coreset, knn_search, knn_self
from asdlib.ldn import capped_k, density_from_distances, ldn_from_candidates, ldn_scores

N_BANDS = 8


@dataclass
class BranchResult:
    """Output of ``Branch.score``.

    scores: (M,) float32, higher = more anomalous.
    maps: (M, T', 8) float32 localisation maps (fine branches; NaN on padded patches) or None.
    params: the branch's parameters (a copy of ``branch.params``).
    name: the branch name.
    """

    scores: np.ndarray
    maps: np.ndarray | None
    params: dict
    name: str = ""


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class KnnParams:
    """Parameters of the clip-level branches (utt_knn, asp_knn, band_knn, beam_mean, beam_max).

    domain: "union" | "separate" (module docstring). metric: "cosine" | "euclidean".
    ldn / k_ldn / eps / k_candidates: local-density normalisation (`asdlib.ldn`); K capped
    by the smallest domain. batch_size / backend ("faiss" | "torch") / device: the search.
    """

    domain: str = "union"
    metric: str = "cosine"
    ldn: bool = False
    k_ldn: int = 16
    eps: float = 1e-3
    k_candidates: int | None = None
    batch_size: int = 8192
    backend: str = "faiss"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.domain not in ("union", "separate"):
            raise ValueError(f"domain must be 'union' or 'separate', got {self.domain!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.backend not in ("faiss", "torch"):
            raise ValueError(f"backend must be 'faiss' or 'torch', got {self.backend!r}")
        if self.k_ldn < 1 or (self.k_candidates is not None and self.k_candidates < 1):
            raise ValueError("k_ldn and k_candidates must be >= 1")

    def search(self) -> dict:
        """The keyword arguments of `asdlib.knn` searches."""
        return dict(batch_size=self.batch_size, backend=self.backend, device=self.device,
                    metric=self.metric)


@dataclass(frozen=True)
class MultiViewParams(KnnParams):
    """adabeam / subband3: `KnnParams` and how the calibrated streams combine ("mean" | "max")."""

    combine: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.combine not in ("mean", "max"):
            raise ValueError(f"combine must be 'mean' or 'max', got {self.combine!r}")


@dataclass(frozen=True)
class FineParams(KnnParams):
    """The fine-grained scorer (`FinePatchScorer`): `KnnParams` with the fine defaults
    (Euclidean, LDN on, k' = 32 candidates) and the bank options: ``coreset`` (fraction of
    the source tokens kept per band by greedy k-centre on a ``coreset_proj``-dim random
    projection, ``seed``) and ``n_self`` (clips that get self maps when those need their own
    search; None = all)."""

    metric: str = "euclidean"
    ldn: bool = True
    k_candidates: int | None = 32
    coreset: float | None = None
    coreset_proj: int | None = 64
    seed: int = 0
    n_self: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.coreset is not None and not 0 < self.coreset <= 1:
            raise ValueError(f"coreset must be a fraction in (0, 1] or None, got {self.coreset}")
        if self.n_self is not None and self.n_self < 2:
            raise ValueError("n_self must be >= 2 or None")

    def scorer(self) -> "FineParams":
        """Only the fields that change the token maps (two aggregations share a scorer)."""
        return FineParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(FineParams)})


@dataclass(frozen=True)
class FineBroadParams(FineParams):
    """fine_broad: `FineParams` and ``q``, the top percentage of tokens averaged (100: all).
    q = 10 was chosen on the tuning data (demo seed 0; docs/EXPERIMENTS.md)."""

    q: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.q <= 100:
            raise ValueError(f"q must be in (0, 100], got {self.q}")


@dataclass(frozen=True)
class FineSelectiveParams(FineParams):
    """fine_selective: `FineParams` and the aggregation: "band_max" (max over time in each
    band, mean over bands) or "topk" (mean of the ``topk`` largest tokens)."""

    mode: str = "band_max"
    topk: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("band_max", "topk"):
            raise ValueError(f"mode must be 'band_max' or 'topk', got {self.mode!r}")
        if self.topk < 1:
            raise ValueError("topk must be >= 1")


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


# ----------------------------------------------------------------------------- helpers

def _z_stats(self_scores: np.ndarray) -> tuple[float, float]:
    """Mean and std (ddof 0) of the finite self-scores; std floored so division is safe."""
    s = np.asarray(self_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite self-scores to calibrate with")
    sd = float(s.std())
    return float(s.mean()), sd if sd > 1e-12 else 1.0


def _fingerprint(f: ClipFeatures) -> str:
    """Content hash of a ClipFeatures (shape, names, domains, n_time, a strided token sample)."""
    h = hashlib.sha1()
    tok = f.tokens
    h.update(f"{tok.shape}{tok.dtype}".encode())
    h.update(np.ascontiguousarray(np.asarray(f.n_time, dtype=np.int64)).tobytes())
    h.update("\x00".join(map(str, f.names)).encode())
    h.update("\x00".join(map(str, f.domain)).encode())
    if tok.size:
        st = max(1, tok.shape[1] // 8)
        sd = max(1, tok.shape[3] // 64)
        h.update(np.ascontiguousarray(tok[:, ::st, :, ::sd]).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- cores

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


_SCORERS: "weakref.WeakValueDictionary[tuple, FinePatchScorer]" = weakref.WeakValueDictionary()


class FinePatchScorer:
    """Token-level LDN scoring against per-band patch banks (fine-grained branches).

    For band b the bank is every valid token of band b of every bank clip (any time);
    a test token of band b is scored ``min_j d(x, r_j) / (eps + rho_j)`` over its
    ``k_candidates`` nearest bank tokens of band b (``None``: over all of them), with
    ``rho_j`` the mean distance of r_j to its K nearest bank tokens of other clips (K =
    ``k_ldn``, capped by the smallest domain's token count). ``ldn=False`` scores the raw
    nearest distance instead. ``metric``: cosine on L2-normalised tokens, or Euclidean on
    the tokens as stored.

    Self maps (leave-one-out): each bank clip's tokens against the bank tokens of the other
    clips, ``rho`` as on the full bank. Without coreset and with k' candidates they come
    for free: the density search (every bank token vs the bank, own clip excluded) keeps
    ``max(K, k')`` neighbours, which are exactly the self-score candidates. Otherwise
    (coreset, or exact LDN) a separate search runs for the tokens of ``n_self`` seeded
    bank clips (None = all); the other clips' self maps stay NaN.

    coreset: fraction of the SOURCE tokens of each band kept by greedy k-centre (target
    tokens are all kept); ``coreset_proj`` is the random-projection dim of the greedy loop.
    """

    def __init__(self, params: FineParams | None = None):
        self.p = (params or FineParams()).scorer()
        self._maps_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _tokens_of(self, tokens: np.ndarray) -> np.ndarray:
        """(N, D) float32 search vectors: L2-normalised for cosine, as stored for Euclidean."""
        return as_float32(tokens, normalize=self.p.metric == "cosine")

    # -- fitting
    def fit(self, bank: ClipFeatures) -> "FinePatchScorer":
        """Build per-band banks, densities and self maps (N, T', 8) from ``bank``."""
        p, kw = self.p, self.p.search()
        n, t, nb, _ = bank.tokens.shape
        self._tokens = bank.tokens                       # reference, no copy
        clip_of, t_of = np.nonzero(bank.valid_time())  # valid tokens, clip-major
        self._clip_of, self._t_of = clip_of, t_of
        domains = np.asarray(bank.domain)[clip_of]
        is_src = domains == "source"
        self.k = capped_k(p.k_ldn, domains)
        reuse = p.coreset is None and p.k_candidates is not None
        if reuse or p.n_self is None or p.n_self >= n:
            self_clips = np.arange(n)
        else:
            self_clips = np.sort(np.random.default_rng(p.seed).choice(n, p.n_self, replace=False))
        self.self_clips = self_clips
        self.self_maps = np.full((n, t, nb), np.nan, dtype=np.float32)
        self.keep, self.rho = self._coreset(is_src, nb), []
        for b in range(nb):
            x = self._tokens_of(self._tokens[clip_of, t_of, b])            # (Nv, D)
            keep = self.keep[b]
            xb, gb = x[keep], clip_of[keep]
            kk = (max(self.k, p.k_candidates) if p.ldn else 1) if reuse else (
                self.k if p.ldn else 0)
            rho = None
            if kk:
                dist, idx = knn_self(xb, kk, gb, normalize=False, **kw)
                if p.ldn:
                    rho = density_from_distances(dist, self.k)
            if reuse:   # keep == all valid tokens
                if p.ldn:
                    vals, _ = ldn_from_candidates(dist[:, :p.k_candidates],
                                                  idx[:, :p.k_candidates], rho, p.eps)
                else:
                    vals = dist[:, 0]
                self.self_maps[clip_of, t_of, b] = vals
            else:
                rows = np.flatnonzero(np.isin(clip_of, self_clips))
                vals = self._match(x[rows], xb, rho, gb, clip_of[rows])
                self.self_maps[clip_of[rows], t_of[rows], b] = vals
            del x
            self.rho.append(rho)
        self.n_bank_tokens = [len(k) for k in self.keep]
        return self

    def _coreset(self, is_src: np.ndarray, n_bands: int) -> list[np.ndarray]:
        """Per band, the kept positions of the valid-token list: a greedy k-centre coreset of
        the source tokens plus every target token (all tokens without ``coreset``).

        The greedy loop is single-threaded and memory-bound, so two bands run at a time
        (threads; numpy releases the GIL) with single-threaded BLAS.
        """
        p = self.p
        everything = np.arange(len(is_src))
        if p.coreset is None or not is_src.any():
            return [everything] * n_bands
        src, tgt = np.flatnonzero(is_src), np.flatnonzero(~is_src)

        def one(b: int) -> np.ndarray:
            x = self._tokens_of(self._tokens[self._clip_of[src], self._t_of[src], b])
            pick = greedy_coreset(x, ratio=p.coreset, seed=p.seed + b,
                                  proj_dim=p.coreset_proj, device=p.device, normalize=False)
            return np.sort(np.concatenate([src[pick], tgt]))

        if p.device != "cpu":
            return [one(b) for b in range(n_bands)]
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as pool:
            return list(pool.map(one, range(n_bands)))

    def _match(self, q: np.ndarray, xb: np.ndarray, rho: np.ndarray | None,
               bank_groups: np.ndarray | None, query_groups: np.ndarray | None) -> np.ndarray:
        """(Mq, D) search vectors vs band bank (Nb, D) -> (Mq,) calibrated distances."""
        p = self.p
        if p.ldn:
            s, _ = ldn_scores(q, xb, rho, p.eps, p.k_candidates, bank_groups, query_groups,
                              normalize=False, **p.search())
            return s
        dist, _ = knn_search(q, xb, 1, bank_groups, query_groups, normalize=False, **p.search())
        return dist[:, 0]

    # -- scoring
    def maps(self, feats: ClipFeatures) -> np.ndarray:
        """(M, T', 8) calibrated distance of every valid test token (NaN when padded).

        The last two results are cached by content, so branches sharing this scorer
        score a test set once.
        """
        key = _fingerprint(feats)
        if key in self._maps_cache:
            self._maps_cache.move_to_end(key)
            return self._maps_cache[key].copy()
        m, t, nb, _ = feats.tokens.shape
        out = np.full((m, t, nb), np.nan, dtype=np.float32)
        q_clip, q_t = np.nonzero(feats.valid_time())
        for b in range(nb):
            keep = self.keep[b]
            xb = self._tokens_of(self._tokens[self._clip_of[keep], self._t_of[keep], b])
            q = self._tokens_of(feats.tokens[q_clip, q_t, b])
            out[q_clip, q_t, b] = self._match(q, xb, self.rho[b], None, None)
            del xb, q
        self._maps_cache[key] = out
        while len(self._maps_cache) > 2:
            self._maps_cache.popitem(last=False)
        return out.copy()


def _shared_scorer(bank: ClipFeatures, p: FineParams) -> FinePatchScorer:
    """The fitted FinePatchScorer for (bank content, scorer settings), built once while in use."""
    settings = p.scorer()
    key = (_fingerprint(bank), settings)
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = FinePatchScorer(settings).fit(bank)
        _SCORERS[key] = scorer
    return scorer


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


# ----------------------------------------------------------------------------- branches


@dataclass
class _Part:
    """One bank (the union, or one domain) with its fitted core and calibration stats."""

    domain: str
    rows: np.ndarray        # bank rows of this part
    core: object
    self_scores: np.ndarray  # (len(rows),) leave-one-out within this part
    mu: float
    sd: float


class Branch:
    """Base of all branches: parameters, domain handling, fit / score / self_scores.

    Subclasses define ``name``, ``Params`` (a frozen parameter dataclass) and three core
    methods: ``_fit_core(bank) -> core``, ``_core_score(core, feats) -> (scores (M,), maps
    or None)``, ``_core_self(core) -> (N,)`` leave-one-out self-scores of the core's bank.
    """

    name: str = ""
    Params: type = KnnParams

    def __init__(self, **params):
        known = {f.name for f in dataclasses.fields(self.Params)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        self.config = self.Params(**params)
        self._parts: list[_Part] | None = None
        self._self: np.ndarray | None = None

    @property
    def params(self) -> dict:
        """Every parameter with its value (defaults included), for the score tables' records."""
        return dataclasses.asdict(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    # -- to be defined by subclasses
    def _fit_core(self, bank: ClipFeatures):
        raise NotImplementedError

    def _core_score(self, core, feats: ClipFeatures) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _core_self(self, core) -> np.ndarray:
        raise NotImplementedError

    # -- public interface
    def fit(self, bank: ClipFeatures) -> "Branch":
        """Fit on the normal train clips of one machine (source + target). Returns self."""
        n = len(bank)
        if n < 2:
            raise ValueError("the bank needs at least 2 clips (leave-one-out)")
        if self.config.domain == "union":
            core = self._fit_core(bank)
            own = self._core_self(core)
            self._parts = [_Part("union", np.arange(n), core, own, *_z_stats(own))]
            self._self = own.astype(np.float32)
            return self
        domains = np.asarray(bank.domain)
        parts, subs = [], []
        for dom in ("source", "target"):
            rows = np.flatnonzero(domains == dom)
            if len(rows) < 2:
                raise ValueError(f"domain='separate' needs >= 2 {dom} clips in the bank, got {len(rows)}")
            sub = bank.subset(rows)
            core = self._fit_core(sub)
            own = self._core_self(core)
            parts.append(_Part(dom, rows, core, own, *_z_stats(own)))
            subs.append(sub)
        if sum(len(p.rows) for p in parts) != n:
            raise ValueError("domain='separate': every bank clip must be 'source' or 'target'")
        z = np.empty((len(parts), n), dtype=np.float64)
        for i, part in enumerate(parts):
            for j, other in enumerate(parts):
                raw = part.self_scores if i == j else self._core_score(other.core, subs[i])[0]
                z[j, part.rows] = (raw - other.mu) / other.sd
        self._parts = parts
        self._self = z.min(0).astype(np.float32)   # NaN stays NaN (own-domain self missing)
        return self

    def score(self, test: ClipFeatures) -> BranchResult:
        """Score test clips (M clips): BranchResult(scores (M,), maps (M, T', 8) or None)."""
        if self._parts is None:
            raise RuntimeError(f"{self.name}: call fit(bank) before score()")
        if len(self._parts) == 1:
            scores, maps = self._core_score(self._parts[0].core, test)
            return BranchResult(np.asarray(scores, dtype=np.float32), maps, self.params, self.name)
        zs, all_maps = [], []
        for part in self._parts:
            s, mp = self._core_score(part.core, test)
            zs.append((np.asarray(s, dtype=np.float64) - part.mu) / part.sd)
            all_maps.append(mp)
        zs = np.stack(zs)
        best = np.argmin(np.where(np.isnan(zs), np.inf, zs), axis=0)
        maps = None
        if all_maps[0] is not None:
            maps = np.stack(all_maps)[best, np.arange(len(best))]
        return BranchResult(zs.min(0).astype(np.float32), maps, self.params, self.name)

    def self_scores(self) -> np.ndarray:
        """(N,) leave-one-out self-scores of the bank clips (a clip never matches itself),
        in the same units as ``score``; NaN for clips not evaluated (fine ``n_self``)."""
        if self._self is None:
            raise RuntimeError(f"{self.name}: call fit(bank) before self_scores()")
        return self._self.copy()


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
            streams.append((view, core, own, *_z_stats(own)))
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


class FineBranch(Branch):
    """Fine-grained localized scoring (token vs same-band patch bank); maps kept."""

    Params = FineParams

    def _aggregate(self, maps: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit_core(self, bank):
        return _shared_scorer(bank, self.config)

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


BRANCHES: dict[str, type[Branch]] = {
    cls.name: cls for cls in (UttKnn, AspKnn, BandKnn, BeamMean, BeamMax, AdaBeam, SubBand3,
                              FineBroad, FineSelective)
}


def make_branch(name: str, **params) -> Branch:
    """A new, unfitted branch ``name`` (a key of ``BRANCHES``) with ``params`` over its defaults."""
    if name not in BRANCHES:
        raise KeyError(f"unknown branch {name!r}; known: {sorted(BRANCHES)}")
    return BRANCHES[name](**params)

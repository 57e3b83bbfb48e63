"""Exact Euclidean k-nearest-neighbour search, pruned by a PCA lower bound.

The fine-grained branch spends its time in Euclidean searches of every token against a
band bank of up to 62 000 tokens of 512-768 dimensions (for LDN, the bank against itself).
Those tokens are a linear image of smooth log-mel patches, so a few principal directions
carry most of their variance. Split ``x - mu = P x + r(x)`` into its part in the top ``dim``
principal directions and the residual. For any two vectors

    |x - y|^2 = |P x - P y|^2 + |r(x) - r(y)|^2 >= |P x - P y|^2 + (|r(x)| - |r(y)|)^2,

the squared distance of the *lifted* vectors ``[P x, |r(x)|]`` (``dim + 1`` dimensions):
a lower bound. So:

1. candidate search: the ``candidates`` nearest bank items under the bound (a search in
   ``dim + 1`` dimensions, with the same leave-one-out groups as the exact one);
2. exact re-ranking of the candidates by their true distance (the flat search's
   arithmetic, float32 norm expansion);
3. certificate: a query whose k-th exact distance is at most the bound of its last
   candidate (every item not among the candidates has a bound at least that large, up to a
   float margin) has its exact k nearest neighbours. With ``fallback=True`` the others are
   searched again with the exact flat search, and the result equals
   ``asdlib.knn.knn_search`` / ``knn_self`` up to float rounding (ties may come back in
   another order). With ``fallback=False`` (what the fine-grained branch uses with
   ``search_dim``) they keep their re-ranked candidates: an approximate search whose recall
   and score error are measured (benchmarks/dcase_rehearsal.py), not guaranteed.

``stats`` counts the certified queries. On learned token banks the certificate is weak (the
residual's norm difference bounds little), so the fallback would redo most queries, while
the re-ranked candidates are nearly always the true neighbours: with 64 of 256 dimensions
and 128 candidates, recall@32 0.996-1.000 on the demo's patch-embedding bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asdlib.knn import as_float32, knn_search

#: Relative float margin of the certificate: the candidate search's squared bounds come
#: from a float32 norm expansion whose error grows with the squared norms involved.
_MARGIN = 1e-5


@dataclass
class SearchStats:
    """What bounded searches did: queries, and how many were certified by the bound."""

    queries: int = 0
    certified: int = 0

    @property
    def uncertified(self) -> int:
        return self.queries - self.certified


class BoundProjection:
    """The top ``dim`` principal directions of a bank (N, D) and the lift
    ``x -> [P (x - mu), |residual|]`` (M, D) -> (M, dim + 1) whose squared distances are
    lower bounds of the true ones. Fitted on at most ``sample`` seeded rows."""

    def __init__(self, bank: np.ndarray, dim: int, sample: int = 20000, seed: int = 0):
        bank = np.asarray(bank)
        n, d = bank.shape
        rows = (np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
                if n > sample else slice(None))
        x = np.asarray(bank[rows], dtype=np.float64)
        self.mu = x.mean(0)
        dim = int(min(dim, d, max(len(x) - 1, 1)))
        _, _, vt = np.linalg.svd(x - self.mu, full_matrices=False)
        self.components = np.ascontiguousarray(vt[:dim].T)          # (D, dim), orthonormal
        self.dim = dim

    @classmethod
    def from_arrays(cls, mu: np.ndarray, components: np.ndarray) -> "BoundProjection":
        """A projection from its stored mean (D,) and components (D, dim)."""
        proj = cls.__new__(cls)
        proj.mu, proj.components = np.asarray(mu, np.float64), np.ascontiguousarray(components)
        proj.dim = proj.components.shape[1]
        return proj

    def lift(self, x: np.ndarray, batch: int = 16384) -> np.ndarray:
        """(M, D) -> (M, dim + 1) float32: projection and residual norm (float64 inside)."""
        x = np.asarray(x)
        out = np.empty((len(x), self.dim + 1), dtype=np.float32)
        for s in range(0, len(x), batch):
            c = np.asarray(x[s:s + batch], dtype=np.float64) - self.mu
            p = c @ self.components
            resid = np.einsum("ij,ij->i", c, c) - np.einsum("ij,ij->i", p, p)
            out[s:s + len(c), :-1] = p
            out[s:s + len(c), -1] = np.sqrt(np.maximum(resid, 0.0))
        return out


def _rerank(queries: np.ndarray, bank: np.ndarray, cand: np.ndarray, k: int,
            bank_sq: np.ndarray | None = None, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared distances of each query (M, D) to its candidates (M, C) (``-1``:
    none), the k smallest ascending: (M, k) float32 squared distances (inf where missing)
    and (M, k) bank rows. The distances use the norm expansion
    ``|q|^2 + |b|^2 - 2 <q, b>`` of the flat search (one gather of the candidates; the
    gather, C x D floats per query, is the cost). ``bank_sq``: the bank's squared norms."""
    m = len(queries)
    if bank_sq is None:
        bank_sq = np.einsum("ij,ij->i", bank, bank)
    d2_out = np.full((m, k), np.inf, dtype=np.float32)
    idx_out = np.full((m, k), -1, dtype=np.int64)
    for s in range(0, m, batch):
        q = as_float32(queries[s:s + batch], False)
        c = cand[s:s + len(q)]
        safe = np.maximum(c, 0)
        dots = np.einsum("bd,bcd->bc", q, bank[safe])                  # (B, C)
        d2 = np.maximum(np.einsum("ij,ij->i", q, q)[:, None] + bank_sq[safe] - 2.0 * dots, 0.0)
        d2[c < 0] = np.inf
        order = np.argpartition(d2, k - 1, axis=1)[:, :k] if d2.shape[1] > k else \
            np.arange(d2.shape[1])[None].repeat(len(q), 0)
        part = np.take_along_axis(d2, order, 1)
        sort = np.argsort(part, axis=1, kind="stable")
        kk = sort.shape[1]
        d2_out[s:s + len(q), :kk] = np.take_along_axis(part, sort, 1)
        idx_out[s:s + len(q), :kk] = np.take_along_axis(np.take_along_axis(c, order, 1), sort, 1)
    idx_out[~np.isfinite(d2_out)] = -1
    return d2_out, idx_out


def _finish(queries, bank, k, cand_d, cand_i, lq, lb, exclude_groups, query_groups,
            search_kw, stats: SearchStats, fallback: bool) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the candidates, certify, fall back to the flat search where asked."""
    d2, idx = _rerank(queries, bank, cand_i, k)
    last_bound = np.square(cand_d[:, -1].astype(np.float64))    # inf when the bank ran out
    lb_sq_max = float(np.einsum("ij,ij->i", lb, lb).max()) if len(lb) else 0.0
    margin = _MARGIN * (np.einsum("ij,ij->i", lq, lq).astype(np.float64) + lb_sq_max)
    exhausted = cand_i[:, -1] < 0
    ok = exhausted | (d2[:, -1].astype(np.float64) <= last_bound - margin)
    # fewer than k found while candidates remained cannot happen (k <= n_cand); guard anyway
    ok &= (idx[:, -1] >= 0) | exhausted
    bad = np.flatnonzero(~ok)
    stats.queries += len(queries)
    stats.certified += len(queries) - len(bad)
    if fallback and len(bad):
        qg = None if query_groups is None else np.asarray(query_groups)[bad]
        dist_b, idx_b = knn_search(np.asarray(queries)[bad], bank, k, exclude_groups, qg,
                                   normalize=False, metric="euclidean", **search_kw)
        d2[bad], idx[bad] = np.square(dist_b), idx_b
    return np.sqrt(d2), idx


def bounded_knn_search(queries: np.ndarray, bank: np.ndarray, k: int,
                       exclude_groups: np.ndarray | None = None,
                       query_groups: np.ndarray | None = None, dim: int = 64,
                       candidates: int | None = None, projection: BoundProjection | None = None,
                       stats: SearchStats | None = None, fallback: bool = True,
                       **search_kw) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean ``knn_search(queries, bank, k, exclude_groups, query_groups)``, exact,
    through the PCA bound (module docstring).

    queries (M, D), bank (N, D); dim: principal directions kept; candidates: re-ranked per
    query (default 2k); projection: a fitted `BoundProjection` of this bank to reuse;
    stats: a `SearchStats` to add to; fallback: re-search the uncertified queries exactly
    (False: keep their re-ranked candidates, approximate); search_kw: batch_size / backend / device of the
    searches (a ``metric`` among them is ignored: the search is Euclidean). Returns ``dist (M, k)`` ascending and ``idx (M, k)`` (inf / -1 where missing).
    """
    search_kw = {k: v for k, v in search_kw.items() if k != "metric"}
    same = queries is bank                          # the bank against itself: lift once
    bank = as_float32(bank, False)
    queries = bank if same else queries
    proj = projection or BoundProjection(bank, dim)
    stats = stats if stats is not None else SearchStats()
    n_cand = max(k, candidates or 2 * k)
    lb = proj.lift(bank)
    lq = lb if same else proj.lift(queries)
    cand_d, cand_i = knn_search(lq, lb, n_cand, exclude_groups, query_groups,
                                normalize=False, metric="euclidean", **search_kw)
    return _finish(queries, bank, k, cand_d, cand_i, lq, lb, exclude_groups, query_groups,
                   search_kw, stats, fallback)


def bounded_knn_self(x: np.ndarray, k: int, groups: np.ndarray | None = None, dim: int = 64,
                     candidates: int | None = None, projection: BoundProjection | None = None,
                     stats: SearchStats | None = None, fallback: bool = True,
                     **search_kw) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean ``knn_self(x, k, groups)`` (every item against the others, its own group
    left out), exact, through the PCA bound. The candidate search in ``dim + 1``
    dimensions is faiss's flat search, not the symmetric ``knn_self``: with a hundred
    candidates per row the latter's merging costs more than the product it saves (one
    62 000-token band: 5.8 s against 1.5 s). Arguments as `bounded_knn_search`."""
    x = np.asarray(x)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    return bounded_knn_search(x, x, k, groups, groups, dim, candidates, projection, stats,
                              fallback, **search_kw)

"""Local-density normalisation (LDN) of nearest-neighbour distances.

Wilkinghoff et al. (IEEE/ACM TASLP 2026): each bank item r_j gets a local scale
``rho_j`` = mean distance (cosine or Euclidean, ``metric``) from r_j to its K nearest other
bank items, leaving out the items of r_j's own group (clip); a query scores

    s(x) = min_j d(x, r_j) / (eps + rho_j)

The minimum is over the ratio, so the chosen reference can differ from the raw nearest
neighbour. ``k_candidates=None`` takes the minimum over every bank item, exactly: with
``w_j = 1 / (eps + rho_j)`` the ratio is ``w_j - <x, w_j r_j>``, a maximum inner product
against the augmented vectors ``[w_j r_j, w_j]`` and the query ``[x, -1]``, so one faiss
search does it (its best 8 candidates are then rescored directly, because the augmented
product loses float32 precision when some rho_j is tiny); under the Euclidean metric the
exact minimum is taken over every bank item directly, one block of queries at a time (the
clip-level banks it is used on are small). ``k_candidates=k'`` takes the minimum over the
k' raw nearest neighbours (the patch-bank variant).

K and small domains: the minimum is over the ratio, so a query far from every reference
picks the reference with the largest rho. When K reaches the size of the smallest domain of
the bank (10 target clips against 990 source ones in DCASE), the rho of that domain's items
must include distances to the other domain and grows several fold; then anomalies, far from
everything, are scored against those items and ranked below the normal clips of the large
domain (measured: AUC_s of clip-level kNN branches below chance with K = 16). `capped_k`
keeps K below half the smallest domain's bank size.

Leave-one-out self-scores (``ldn_self_scores``): a bank item is scored against the bank
without the items of its own group; the densities ``rho`` of the other items are kept as
computed on the full bank (their K neighbours may include the left-out group), so that
self-scores and test scores use the same ``rho``.
"""

from __future__ import annotations

import numpy as np

from asdlib.knn import as_float32, knn_search, knn_self, similarity_search

_REFINE = 8  # candidates of the exact (augmented) search rescored directly in float32


def capped_k(k: int, domains) -> int:
    """K for densities over a bank whose items belong to ``domains`` (one label per item,
    or per clip): at most half the size of the smallest domain (at least 1), so that an
    item's K neighbours can all come from its own domain (see the module docstring)."""
    labels, counts = np.unique(np.asarray(domains).astype(str), return_counts=True)
    if len(counts) < 2:
        return int(k)
    return int(max(1, min(k, counts.min() // 2)))


def density_from_distances(dist: np.ndarray, K: int) -> np.ndarray:
    """rho (N,) = mean of the first K finite distances of each row of ``dist`` (N, k >= K).

    Rows with fewer than K finite neighbours average those they have; rows with none get
    rho = 0 (the score then reduces to ``d / eps``).
    """
    d = np.asarray(dist, dtype=np.float32)[:, :K]
    finite = np.isfinite(d)
    count = finite.sum(1)
    total = np.where(finite, d, 0.0).sum(1, dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def local_density(bank: np.ndarray, K: int = 16, groups: np.ndarray | None = None,
                  batch_size: int = 8192, backend: str = "faiss", device: str = "cpu",
                  normalize: bool = True, metric: str = "cosine") -> np.ndarray:
    """rho (N,): mean distance of each bank item (N, D) to its K nearest other items.

    groups: (N,) clip id per item; items of the same clip are never neighbours (default:
    each item is its own group, i.e. only the item itself is left out).
    """
    dist, _ = knn_self(bank, K, groups, batch_size=batch_size, backend=backend, device=device,
                       normalize=normalize, metric=metric)
    return density_from_distances(dist, K)


def ldn_from_candidates(dist: np.ndarray, idx: np.ndarray, rho: np.ndarray,
                        eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """LDN over given candidates: dist, idx (M, k) -> (scores (M,), chosen bank row (M,)).

    Missing candidates (``idx = -1``) are ignored; a row without any scores ``inf``, -1.
    """
    rho = np.asarray(rho, dtype=np.float32)
    ratio = np.where(idx >= 0, dist / (np.float32(eps) + rho[np.maximum(idx, 0)]), np.inf)
    col = np.argmin(ratio, axis=1)
    rows = np.arange(len(ratio))
    scores = ratio[rows, col].astype(np.float32)
    return scores, np.where(np.isfinite(scores), idx[rows, col], -1)


def ldn_scores(queries: np.ndarray, bank: np.ndarray, rho: np.ndarray, eps: float = 1e-3,
               k_candidates: int | None = None, exclude_groups: np.ndarray | None = None,
               query_groups: np.ndarray | None = None, batch_size: int = 8192,
               backend: str = "faiss", device: str = "cpu",
               normalize: bool = True, metric: str = "cosine",
               ivf: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LDN scores of queries (M, D) against bank (N, D) with densities rho (N,).

    k_candidates: None = exact minimum over all bank items; k' = over the k' raw nearest
    (found through an inverted-file index with ``ivf``, as in ``knn_search``).
    exclude_groups (N,) / query_groups (M,): leave-one-out, as in ``knn_search``.
    Returns ``scores (M,)`` float32 and the index (M,) of the bank item attaining the
    minimum (-1 when nothing is left after exclusion).
    """
    if k_candidates is not None:
        dist, idx = knn_search(queries, bank, k_candidates, exclude_groups, query_groups,
                               batch_size=batch_size, backend=backend, device=device,
                               normalize=normalize, metric=metric, ivf=ivf)
        return ldn_from_candidates(dist, idx, rho, eps)
    if ivf is not None:
        raise ValueError("ivf needs k_candidates (the exact minimum searches every item)")
    if (exclude_groups is None) != (query_groups is None):
        raise ValueError("give both exclude_groups and query_groups, or neither")
    rho = np.asarray(rho, dtype=np.float32)
    if metric == "euclidean":
        return _exact_euclidean(queries, bank, rho, eps, exclude_groups, query_groups)
    w = (1.0 / (np.float32(eps) + rho)).astype(np.float32)
    b = as_float32(bank, normalize)
    aug_bank = np.empty((len(b), b.shape[1] + 1), dtype=np.float32)
    aug_bank[:, :-1] = b * w[:, None]
    aug_bank[:, -1] = w

    def augment(batch: np.ndarray) -> np.ndarray:  # [x, -1], one batch at a time
        q = as_float32(batch, normalize)
        return np.concatenate([q, -np.ones((len(q), 1), dtype=np.float32)], axis=1)

    # w_j - <x, w_j r_j> cancels badly in float32 when w_j is large: take the best
    # _REFINE candidates of the augmented search and rescore them directly.
    queries = np.asarray(queries)
    _, idx = similarity_search(queries, aug_bank, min(_REFINE, len(b)), exclude_groups,
                               query_groups, batch_size, backend, device, prepare=augment)
    del aug_bank
    scores = np.empty(len(queries), dtype=np.float32)
    arg = np.empty(len(queries), dtype=np.int64)
    for s in range(0, len(queries), batch_size):
        q = as_float32(queries[s:s + batch_size], normalize)
        cand = idx[s:s + len(q)]
        safe = np.maximum(cand, 0)
        d = np.maximum(np.float32(0.0), np.float32(1.0) - np.einsum("md,mkd->mk", q, b[safe]))
        ratio = np.where(cand >= 0, d / (np.float32(eps) + rho[safe]), np.inf)
        col = np.argmin(ratio, axis=1)
        rows = np.arange(len(q))
        scores[s:s + len(q)] = ratio[rows, col]
        arg[s:s + len(q)] = np.where(np.isfinite(ratio[rows, col]), cand[rows, col], -1)
    return scores.astype(np.float32), arg


def _exact_euclidean(queries, bank, rho, eps, exclude_groups, query_groups, block: int = 1024):
    """Exact Euclidean LDN over every bank item, queries in blocks of ``block``."""
    q_all = as_float32(queries, False)
    b = as_float32(bank, False)
    b_sq = np.einsum("ij,ij->i", b, b)
    scores = np.empty(len(q_all), dtype=np.float32)
    arg = np.empty(len(q_all), dtype=np.int64)
    for s in range(0, len(q_all), block):
        q = q_all[s:s + block]
        d = np.sqrt(np.maximum(0.0, (q * q).sum(1)[:, None] + b_sq[None] - 2.0 * (q @ b.T)))
        ratio = d / (np.float32(eps) + rho[None])
        if exclude_groups is not None:
            ratio[np.asarray(query_groups)[s:s + len(q), None] == np.asarray(exclude_groups)[None]] = np.inf
        col = np.argmin(ratio, axis=1)
        best = ratio[np.arange(len(q)), col]
        scores[s:s + len(q)] = best
        arg[s:s + len(q)] = np.where(np.isfinite(best), col, -1)
    return scores, arg


def ldn_self_scores(bank: np.ndarray, rho: np.ndarray, eps: float = 1e-3,
                    groups: np.ndarray | None = None, k_candidates: int | None = None,
                    batch_size: int = 8192, backend: str = "faiss", device: str = "cpu",
                    normalize: bool = True, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out LDN scores of the bank items (N, D): each against the bank without its
    own group (default: without itself); ``rho`` stays the full-bank density.
    Returns ``scores (N,)`` and the chosen bank row (N,)."""
    groups = np.arange(len(bank)) if groups is None else np.asarray(groups)
    return ldn_scores(bank, bank, rho, eps, k_candidates, exclude_groups=groups,
                      query_groups=groups, batch_size=batch_size, backend=backend,
                      device=device, normalize=normalize, metric=metric)


def densities_by_domain(bank: np.ndarray, domains, K: int = 16, metric: str = "cosine",
                        normalize: bool = True) -> dict:
    """Mean rho of the source and of the target bank items (N, D), with K as given and with
    K capped by the smallest domain (`capped_k`): how much sparser LDN finds the small
    domain, the cause of AUC_s falling when K reaches its size.
    Returns {"K": K, "K capped": k, "source": (mean rho, capped), "target": (...)}."""
    domains = np.asarray(domains).astype(str)
    k_cap = capped_k(K, domains)
    out: dict = {"K": int(K), "K capped": int(k_cap)}
    rho = local_density(bank, min(K, len(bank) - 1), metric=metric, normalize=normalize)
    rho_cap = local_density(bank, k_cap, metric=metric, normalize=normalize)
    for domain in ("source", "target"):
        sel = domains == domain
        if sel.any():
            out[domain] = (float(rho[sel].mean()), float(rho_cap[sel].mean()))
    return out


def domain_density_table(store, table, channel: str = "near", K: int = 16):
    """Per machine, the mean rho of its source and target bank clips' utterance vectors with
    ``K`` and with K capped (`densities_by_domain`): rows machine, columns
    ``rho source``, ``rho target``, ``rho source (K capped)``, ``rho target (K capped)``, ``K capped``."""
    import pandas as pd

    rows = {}
    for machine in dict.fromkeys(table["machine"]):
        bank = store.load(machine, "train", channel=channel)
        d = densities_by_domain(np.asarray(bank.utt, dtype=np.float32), bank.domain, K)
        rows[machine] = {"rho source": d.get("source", (np.nan,) * 2)[0],
                         "rho target": d.get("target", (np.nan,) * 2)[0],
                         "rho source (K capped)": d.get("source", (np.nan,) * 2)[1],
                         "rho target (K capped)": d.get("target", (np.nan,) * 2)[1],
                         "K capped": d["K capped"]}
    return pd.DataFrame(rows).T

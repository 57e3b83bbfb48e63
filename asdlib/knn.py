"""Exact nearest-neighbour search (faiss or torch) with leave-one-out exclusion, and
greedy k-centre coreset selection.

Geometry (``metric``): "cosine", the distance ``d = 1 - cos`` on L2-normalised float32
vectors (exact inner-product search, ``faiss.IndexFlatIP``), or "euclidean", ``d = |x - y|``
on the vectors as given (``faiss.IndexFlatL2``), which keeps a vector's scale: a token whose
spread across dimensions grew (a click inside a patch) is far from normal tokens of the
same direction. Internally both search a similarity (``<q, b>`` or ``-|q - b|^2``).
Queries are processed in batches so the memory held at once is
``batch_size x (k + extra)`` results plus one float32 copy of the bank.

Leave-one-out: every bank item carries a group id (e.g. its clip); a query with group
``g`` never matches bank items of group ``g``. With faiss the search asks for
``k + extra`` neighbours, ``extra`` = the largest group size in the bank, and filters; the
torch backend masks the same-group entries of the similarity matrix before ``topk``.
Both are exact. Missing neighbours (bank smaller than ``k`` after exclusion) come back as
``dist = inf``, ``idx = -1``. ``knn_self`` is the bank-vs-itself case (LDN densities,
leave-one-out self-scores), computed on symmetric blocks to halve the matmul work.
"""

from __future__ import annotations

import numpy as np

_NORM_EPS = 1e-12


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 copy of ``x`` (rows of norm 0 stay 0). (N, D) -> (N, D)"""
    out = np.array(x, dtype=np.float32, order="C")
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    out /= np.maximum(norms, _NORM_EPS)[:, None]
    return out


METRICS = ("cosine", "euclidean")


def as_float32(x: np.ndarray, normalize: bool) -> np.ndarray:
    """C-contiguous float32 (N, D), L2-normalised row-wise when ``normalize``."""
    if normalize:
        return l2_normalize(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def similarity_to_distance(sim: np.ndarray, metric: str) -> np.ndarray:
    """Search similarity -> distance: ``max(0, 1 - sim)`` (cosine) or ``sqrt(max(0, -sim))``
    (euclidean, where the similarity is ``-|q - b|^2``); -inf stays inf."""
    if metric == "cosine":
        return np.maximum(np.float32(0.0), np.float32(1.0) - sim)
    return np.sqrt(np.maximum(np.float32(0.0), -sim))


class _GroupIndex:
    """Bank items grouped by id, to list the (query row, bank col) pairs to exclude."""

    def __init__(self, groups: np.ndarray):
        groups = np.asarray(groups)
        self.order = np.argsort(groups, kind="stable")
        self.ids, self.starts, self.counts = np.unique(
            groups[self.order], return_index=True, return_counts=True)
        self.max_count = int(self.counts.max()) if len(self.counts) else 0

    def pairs(self, query_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols): every bank col sharing the group of query row."""
        if len(self.ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.clip(np.searchsorted(self.ids, query_groups), 0, len(self.ids) - 1)
        hit = self.ids[pos] == query_groups
        cnt = np.where(hit, self.counts[pos], 0)
        rows = np.repeat(np.arange(len(query_groups)), cnt)
        if len(rows) == 0:
            return rows, rows
        first = np.repeat(self.starts[pos] - (np.cumsum(cnt) - cnt), cnt)
        cols = self.order[first + np.arange(len(rows))]
        return rows, cols


def _check_device(device: str) -> str:
    device = str(device)
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}")
    return device


def _ivf_index(bank: np.ndarray, metric: str, ivf: tuple[int, int]):
    """faiss inverted-file index of ``bank`` (approximate): ``ivf = (lists, probe)``; the
    lists are k-means cells trained on the bank (at most ``len(bank) // 39`` of them, faiss's
    minimum of training points per cell), each query visits the ``probe`` nearest cells."""
    import faiss

    lists, probe = ivf
    dim = bank.shape[1]
    lists = max(1, min(int(lists), len(bank) // 39))
    quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.IndexIVFFlat(quantizer, dim, lists, kind)
    index.cp.seed = 1234                                    # k-means seeded: repeatable cells
    index.train(bank)
    index.nprobe = min(int(probe), lists)
    faiss.add_to_referenced_objects(index, quantizer)   # kept alive with the index
    return index


def _faiss_index(bank: np.ndarray, device: str, metric: str = "cosine",
                 ivf: tuple[int, int] | None = None):
    import faiss

    dim = bank.shape[1]
    if ivf is not None:
        if device != "cpu":
            raise ValueError("the inverted-file search (ivf) runs on the CPU only; use device='cpu'")
        index = _ivf_index(bank, metric, ivf)
    elif device == "cpu":
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    else:
        n_gpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if n_gpu == 0:
            raise RuntimeError(
                f"device={device!r} requested with backend='faiss' but this faiss build sees no "
                "GPU (faiss-cpu installed?). Use device='cpu', or backend='torch' for CUDA.")
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = int(device.split(":")[1]) if ":" in device else 0
        index = (faiss.GpuIndexFlatIP(res, dim, cfg) if metric == "cosine"
                 else faiss.GpuIndexFlatL2(res, dim, cfg))
        # kept alive with the index (faiss refuses unknown attributes on its wrappers)
        faiss.add_to_referenced_objects(index, res)
    index.add(bank)
    return index


def similarity_search(queries: np.ndarray, bank: np.ndarray, k: int,
                      exclude_groups: np.ndarray | None, query_groups: np.ndarray | None,
                      batch_size: int, backend: str, device: str, prepare=None,
                      metric: str = "cosine",
                      ivf: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k similarities of ``queries`` (M, .) against float32 ``bank`` (N, D): inner
    products (``metric`` "cosine": give normalised vectors) or ``-|q - b|^2`` ("euclidean").
    ``ivf = (lists, probe)``: approximate, through a faiss inverted-file index (faiss
    backend, CPU); None: exact.

    ``prepare`` maps one batch of queries to float32 (M_b, D) (default: cast), so that
    conversion, normalisation or augmentation happen one batch at a time.
    Returns ``sim (M, k)`` float32 (descending, ``-inf`` where missing) and
    ``idx (M, k)`` int64 (``-1`` where missing).
    """
    metric = _check_metric(metric)
    if prepare is None:
        prepare = lambda batch: as_float32(batch, False)  # noqa: E731
    m, n = len(queries), len(bank)
    sim_out = np.full((m, k), -np.inf, dtype=np.float32)
    idx_out = np.full((m, k), -1, dtype=np.int64)
    if m == 0 or n == 0 or k == 0:
        return sim_out, idx_out
    gindex = _GroupIndex(exclude_groups) if exclude_groups is not None else None
    extra = gindex.max_count if gindex is not None else 0

    if ivf is not None and backend != "faiss":
        raise ValueError("the inverted-file search (ivf) needs backend='faiss'")
    if backend == "faiss":
        index = _faiss_index(bank, device, metric, ivf)
        ks = min(n, k + extra)
        for s in range(0, m, batch_size):
            q = prepare(queries[s:s + batch_size])
            sim, idx = index.search(q, ks)
            if metric == "euclidean":  # faiss gives squared distances, ascending
                sim = np.where(idx >= 0, -sim, -np.inf).astype(np.float32)
            if gindex is not None:
                bad = idx < 0
                valid_idx = np.where(bad, 0, idx)
                qg = np.asarray(query_groups[s:s + len(q)])
                bad |= np.asarray(exclude_groups)[valid_idx] == qg[:, None]
                # stable compaction: keep the first k non-excluded neighbours of each row
                order = np.argsort(bad, axis=1, kind="stable")[:, :k]
                sim = np.take_along_axis(sim, order, 1)
                idx = np.take_along_axis(idx, order, 1)
                gone = np.take_along_axis(bad, order, 1)
                sim[gone] = -np.inf
                idx[gone] = -1
            kk = sim.shape[1]
            sim_out[s:s + len(q), :kk] = sim
            idx_out[s:s + len(q), :kk] = idx
        idx_out[~np.isfinite(sim_out)] = -1
        return sim_out, idx_out

    if backend == "torch":
        import torch

        dev = torch.device(device)
        tb = torch.from_numpy(bank).to(dev)
        tb_sq = (tb * tb).sum(1) if metric == "euclidean" else None
        kk = min(n, k)
        for s in range(0, m, batch_size):
            q = torch.from_numpy(prepare(queries[s:s + batch_size])).to(dev)
            sim = q @ tb.T
            if metric == "euclidean":
                sim = (2.0 * sim - tb_sq[None, :] - (q * q).sum(1, keepdim=True)).clamp_max(0.0)
            if gindex is not None:
                rows, cols = gindex.pairs(np.asarray(query_groups[s:s + len(q)]))
                if len(rows):
                    sim[torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)] = -torch.inf
            val, ind = torch.topk(sim, kk, dim=1)
            sim_out[s:s + len(q), :kk] = val.cpu().numpy()
            idx_out[s:s + len(q), :kk] = ind.cpu().numpy()
        idx_out[~np.isfinite(sim_out)] = -1
        return sim_out, idx_out

    raise ValueError(f"backend must be 'faiss' or 'torch', got {backend!r}")


def knn_search(queries: np.ndarray, bank: np.ndarray, k: int,
               exclude_groups: np.ndarray | None = None, query_groups: np.ndarray | None = None,
               batch_size: int = 8192, backend: str = "faiss", device: str = "cpu",
               normalize: bool = True, metric: str = "cosine",
               ivf: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest bank items of every query under cosine or Euclidean distance
    (approximate with ``ivf``).

    queries: (M, D), bank: (N, D), any float dtype (computed in float32).
    exclude_groups: (N,) group id of each bank item; query_groups: (M,) group id of each
    query. A query never matches bank items of its own group (leave-one-out).
    batch_size: queries per search call (bounds the memory of one batch).
    backend: "faiss" (IndexFlatIP; faiss GPU index when ``device`` is CUDA) or "torch"
    (matmul + topk, on ``device``).
    normalize: L2-normalise both sides first (cosine; False when already normalised).
    metric: "cosine" (``d = max(0, 1 - <q, b>)``) or "euclidean" (``d = |q - b|`` on the
        vectors as given; ``normalize`` is ignored).
    ivf: ``(lists, probe)``: search a faiss inverted-file index instead (approximate: a
        query sees the bank items of its ``probe`` nearest of ``lists`` k-means cells).
    Returns ``dist (M, k)`` float32 ascending and ``idx (M, k)`` int64 bank rows; missing
    neighbours are ``inf`` / ``-1``.
    """
    if (exclude_groups is None) != (query_groups is None):
        raise ValueError("give both exclude_groups and query_groups, or neither")
    queries, bank = np.asarray(queries), np.asarray(bank)
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries (M, D) and bank (N, D) expected, got {queries.shape}, {bank.shape}")
    if exclude_groups is not None:
        exclude_groups, query_groups = np.asarray(exclude_groups), np.asarray(query_groups)
        if len(exclude_groups) != len(bank) or len(query_groups) != len(queries):
            raise ValueError("exclude_groups must be (N,) and query_groups (M,)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = _check_device(device)
    normalize = normalize and _check_metric(metric) == "cosine"
    b = as_float32(bank, normalize)
    sim, idx = similarity_search(queries, b, k, exclude_groups, query_groups, batch_size,
                                 backend, device, prepare=lambda batch: as_float32(batch, normalize),
                                 metric=metric, ivf=ivf)
    dist = similarity_to_distance(sim, metric)
    dist[idx < 0] = np.inf
    return dist, idx


def knn_self(x: np.ndarray, k: int, groups: np.ndarray | None = None,
             symmetric: bool = True, block: int = 4096, batch_size: int = 8192,
             backend: str = "faiss", device: str = "cpu",
             normalize: bool = True, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """k nearest OTHER items of every item of ``x`` (N, D), leaving out its own group.

    Same result as ``knn_search(x, x, k, groups, groups)`` (groups default: each item
    alone, i.e. only the item itself is left out), for the bank-vs-bank searches of LDN
    densities and leave-one-out self-scores.
    ``symmetric=True`` (CPU) computes each pair of ``block``-sized blocks once: one BLAS
    product S = X_I X_J^T feeds both the rows of I and the rows of J. Each row keeps its
    running top-k and the k-th best similarity as a threshold, so only entries above it
    (a small fraction once the diagonal blocks have set the thresholds) are merged. This
    halves the matmul work of the quadratic pass (measured in benchmarks/bench_branches.py).
    With ``metric`` "euclidean" the block product gives ``-|x_i - x_j|^2`` through the
    squared norms, symmetric as well.
    Otherwise (or with the torch backend / a CUDA device) it is plain ``knn_search``.
    Returns ``dist (N, k)`` ascending and ``idx (N, k)`` (``inf`` / ``-1`` where missing).
    """
    x = np.asarray(x)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    if len(groups) != len(x):
        raise ValueError("groups must be (N,)")
    kw = dict(batch_size=batch_size, backend=backend, device=device, metric=metric)
    if not symmetric or backend != "faiss" or _check_device(device) != "cpu" or len(x) <= block:
        return knn_search(x, x, k, groups, groups, normalize=normalize, **kw)
    euclidean = _check_metric(metric) == "euclidean"
    x = as_float32(x, normalize and not euclidean)
    sq = np.einsum("ij,ij->i", x, x) if euclidean else None
    n = len(x)
    best_s = np.full((n, k), -np.inf, dtype=np.float32)
    best_i = np.full((n, k), -1, dtype=np.int64)
    gindex = _GroupIndex(groups)
    blocks = [(s, min(n, s + block)) for s in range(0, n, block)]
    block_groups = [np.unique(groups[a:b]) for a, b in blocks]

    # diagonal blocks: exact top-k inside the block sets the first thresholds
    for a, b in blocks:
        d, i = knn_search(x[a:b], x[a:b], k, groups[a:b], groups[a:b], normalize=False, **kw)
        best_s[a:b] = np.where(i >= 0, -(d * d) if euclidean else 1.0 - d, -np.inf)
        best_i[a:b] = np.where(i >= 0, i + a, -1)
    theta = best_s[:, -1].copy()

    def merge(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """Merge candidate (row, col, sim) triples into the running top-k lists."""
        if len(rows) == 0:
            return
        u, cnt = np.unique(rows, return_counts=True)
        r = np.concatenate([np.repeat(u, k), rows])
        c = np.concatenate([best_i[u].ravel(), cols])
        v = np.concatenate([best_s[u].ravel(), vals])
        if euclidean:  # similarities are unbounded below: sort by row, then by -sim
            order = np.lexsort((-v.astype(np.float64), r))
        else:
            # one float64 key sorts by row, then by descending similarity (sims lie in
            # [-1, 1]; missing entries, -inf, are keyed as -2 so they stay inside their row)
            order = np.argsort(r * 4.0 + (1.0 - np.maximum(v, -2.0)), kind="stable")
        c, v = c[order], v[order]
        start = np.cumsum(cnt + k) - (cnt + k)
        take = (start[:, None] + np.arange(k)[None, :]).ravel()
        best_s[u] = v[take].reshape(len(u), k)
        best_i[u] = c[take].reshape(len(u), k)
        theta[u] = best_s[u, -1]

    def above(s: np.ndarray, thr: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the entries of s above the per-row (axis 1) / per-col threshold."""
        return np.nonzero(s > (thr[:, None] if axis == 1 else thr[None, :]))

    for bi, (a0, a1) in enumerate(blocks):
        for bj in range(bi + 1, len(blocks)):
            b0, b1 = blocks[bj]
            s = x[a0:a1] @ x[b0:b1].T
            if euclidean:  # -|x_i - x_j|^2, as symmetric as the product
                s *= 2.0
                s -= sq[a0:a1, None]
                s -= sq[None, b0:b1]
                np.minimum(s, 0.0, out=s)
            if len(np.intersect1d(block_groups[bi], block_groups[bj], assume_unique=True)):
                rows, cols = gindex.pairs(groups[a0:a1])
                ok = (cols >= b0) & (cols < b1)
                s[rows[ok], cols[ok] - b0] = -np.inf
            r, c = above(s, theta[a0:a1], 1)
            merge(r + a0, c + b0, s[r, c])
            r, c = above(s, theta[b0:b1], 0)
            merge(c + b0, r + a0, s[r, c])
    best_i[~np.isfinite(best_s)] = -1
    dist = similarity_to_distance(best_s, metric)
    dist[best_i < 0] = np.inf
    return dist, best_i


def _coreset_size(n_items: int, n: int | None, ratio: float | None) -> int:
    if (n is None) == (ratio is None):
        raise ValueError("give exactly one of n or ratio")
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        n = int(np.ceil(ratio * n_items))
    if not 1 <= n <= n_items:
        raise ValueError(f"coreset size must be in [1, {n_items}], got {n}")
    return int(n)


def _project(x: np.ndarray, proj_dim: int | None, seed: int, normalize: bool,
             chunk: int = 16384) -> np.ndarray:
    """(N, D) -> (N, p) float32: optional L2 normalisation then Gaussian projection."""
    n, d = x.shape
    rng = np.random.default_rng(seed)
    proj = None
    if proj_dim is not None and proj_dim < d:
        proj = (rng.standard_normal((d, proj_dim)) / np.sqrt(proj_dim)).astype(np.float32)
    out = np.empty((n, d if proj is None else proj_dim), dtype=np.float32)
    for s in range(0, n, chunk):
        block = as_float32(x[s:s + chunk], normalize)
        out[s:s + chunk] = block if proj is None else block @ proj
    return out


def greedy_coreset(x: np.ndarray, n: int | None = None, ratio: float | None = None,
                   seed: int = 0, proj_dim: int | None = 64, device: str = "cpu",
                   normalize: bool = True) -> np.ndarray:
    """Greedy k-centre coreset (farthest-point sampling), as in PatchCore.

    x: (N, D). Exactly one of ``n`` (coreset size) or ``ratio`` (fraction of N).
    The first centre is drawn with ``seed``; each next one is the item farthest (squared
    Euclidean) from the centres chosen so far. ``normalize`` works on L2-normalised rows
    (cosine geometry, like the search). ``proj_dim``: run the greedy loop on a seeded
    Gaussian random projection to ``proj_dim`` dims (None = full dims). Each step reads the
    whole (N, p) array once, so the loop is memory-bound: at p = 64 the array of 62k
    tokens stays in cache (see benchmarks/bench_branches.py for the measured cost and
    covering radius). Memory: one (N, p) float32 array.
    ``device``: "cpu" (numpy) or CUDA (torch).
    Returns the selected rows (n,) int64, distinct, in selection order; a smaller ``n``
    with the same seed gives a prefix, so the covering radius never grows with ``n``.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be (N, D), got {x.shape}")
    size = _coreset_size(len(x), n, ratio)
    device = _check_device(device)
    xp = _project(x, proj_dim, seed, normalize)
    start = int(np.random.default_rng(seed).integers(len(x)))
    if device == "cpu":
        return _greedy_numpy(xp, size, start)
    return _greedy_torch(xp, size, start, device)


def _greedy_numpy(xp: np.ndarray, size: int, start: int) -> np.ndarray:
    # thousands of small memory-bound matvecs: multi-threaded BLAS only adds thread
    # wake-up / spin cost (measured 15 ms vs 1 ms per step on a busy 2-core machine)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return _greedy_numpy_loop(xp, size, start)
    with threadpool_limits(1, user_api="blas"):
        return _greedy_numpy_loop(xp, size, start)


def _greedy_numpy_loop(xp: np.ndarray, size: int, start: int) -> np.ndarray:
    sq = np.einsum("ij,ij->i", xp, xp)
    sel = np.empty(size, dtype=np.int64)
    sel[0] = start
    mind = sq - 2.0 * (xp @ xp[start]) + sq[start]
    mind[start] = -np.inf
    buf = np.empty_like(mind)
    for i in range(1, size):
        j = int(np.argmax(mind))
        sel[i] = j
        np.dot(xp, xp[j], out=buf)
        buf *= -2.0
        buf += sq
        buf += sq[j]
        np.minimum(mind, buf, out=mind)
        mind[j] = -np.inf  # chosen items are never chosen again (distinct even with duplicates)
    return sel


def _greedy_torch(xp: np.ndarray, size: int, start: int, device: str) -> np.ndarray:
    import torch

    x = torch.from_numpy(xp).to(torch.device(device))
    sq = (x * x).sum(1)
    sel = torch.empty(size, dtype=torch.long, device=x.device)
    sel[0] = start
    mind = torch.addmv(sq + sq[start], x, x[start], alpha=-2.0)
    mind[start] = -torch.inf
    for i in range(1, size):
        j = torch.argmax(mind)
        sel[i] = j
        torch.minimum(mind, torch.addmv(sq + sq[j], x, x[j], alpha=-2.0), out=mind)
        mind[j] = -torch.inf
    return sel.cpu().numpy()


def covering_radius(x: np.ndarray, centres: np.ndarray, normalize: bool = True) -> float:
    """Largest cosine distance from a row of ``x`` (N, D) to its nearest row of ``centres``."""
    dist, _ = knn_search(x, centres, 1, normalize=normalize)
    return float(dist[:, 0].max())

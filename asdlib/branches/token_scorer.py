"""The fitted token-level scorer of the fine-grained branches (`FinePatchScorer`), shared
by the branches of one bank in memory and, optionally, stored on disk across runs.

The fit (per band: the kept bank tokens, their LDN densities, the bounded-search
projection, and the leave-one-out self maps of the bank clips) is the cost of the
fine-grained branches: at DCASE size a 62 000 x 62 000 token search per band. Inside
`stored_fits(folder)` a fit is written to ``folder/<key>.npz`` and read back by any later
fit whose key matches; the key hashes the bank's whole content (tokens, valid lengths,
names, domains), the scorer settings, and the source of the code that computes a fit
(this module and what it imports), so a stored fit is never served for other features,
settings or code. File names begin with the code's hash, and writing a fit removes the
fits of other code from the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np

from asdlib import atomic
from asdlib.bounded_knn import BoundProjection, SearchStats, bounded_knn_search, bounded_knn_self
from asdlib.branches.params import FineParams
from asdlib.features import ClipFeatures
from asdlib.knn import as_float32, greedy_coreset, knn_search, knn_self
from asdlib.ldn import capped_k, density_from_distances, ldn_from_candidates, ldn_scores


def _fingerprint(f: ClipFeatures) -> str:
    """Content hash of a ClipFeatures (tokens, n_time, names, domains): the key of the
    fitted-scorer and maps caches, so a cache can never serve other features (about 1 s
    per GB of tokens)."""
    h = hashlib.blake2b(digest_size=20)
    tok = f.tokens
    h.update(f"{tok.shape}{tok.dtype}".encode())
    h.update(np.ascontiguousarray(np.asarray(f.n_time, dtype=np.int64)).tobytes())
    h.update("\x00".join(map(str, f.names)).encode())
    h.update("\x00".join(map(str, f.domain)).encode())
    for i in range(len(tok)):       # one clip at a time: no copy of a memory-mapped store
        h.update(np.ascontiguousarray(tok[i]).data)
    return h.hexdigest()


#: The last fitted scorers (strong references: the branches of one machine are built one
#: after the other, so a weak reference died with the first branch and the second fitted
#: again), keyed by bank content and scorer settings.
_SCORERS: "OrderedDict[tuple, FinePatchScorer]" = OrderedDict()
_SCORERS_KEPT = 2


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
        self.restored_from: Path | None = None     # the stored fit it was read from, if any
        self._maps_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _tokens_of(self, tokens: np.ndarray) -> np.ndarray:
        """(N, D) float32 search vectors: L2-normalised for cosine, as stored for Euclidean."""
        return as_float32(tokens, normalize=self.p.metric == "cosine")

    # -- fitting
    def fit(self, bank: ClipFeatures) -> "FinePatchScorer":
        """Build per-band banks, densities and self maps (N, T', 8) from ``bank``."""
        p, kw = self.p, self.p.search()
        n, t, nb, _ = bank.tokens.shape
        clip_of, t_of = self._attach(bank)
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
        self.projections: list[BoundProjection | None] = []
        self.search_stats = SearchStats()
        for b in range(nb):
            x = self._tokens_of(self._tokens[clip_of, t_of, b])            # (Nv, D)
            keep = self.keep[b]
            xb, gb = x[keep], clip_of[keep]
            proj = (BoundProjection(xb, p.search_dim, seed=p.seed + b)
                    if p.search_dim is not None else None)
            self.projections.append(proj)
            kk = (max(self.k, p.k_candidates) if p.ldn else 1) if reuse else (
                self.k if p.ldn else 0)
            rho = None
            if kk and proj is not None:
                dist, idx = bounded_knn_self(xb, kk, gb, projection=proj, fallback=False,
                                             candidates=p.search_candidates,
                                             stats=self.search_stats, **kw)
            elif kk and p.ivf_lists is not None:    # knn_self's symmetric blocks are exact
                dist, idx = knn_search(xb, xb, kk, gb, gb, normalize=False, **kw)
            elif kk:
                dist, idx = knn_self(xb, kk, gb, normalize=False, **kw)
            if kk and p.ldn:
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
                vals = self._match(x[rows], xb, rho, gb, clip_of[rows], proj)
                self.self_maps[clip_of[rows], t_of[rows], b] = vals
            del x
            self.rho.append(rho)
        return self

    def _attach(self, bank: ClipFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Keep a reference to the bank's tokens (no copy) and the (clip, time) of its valid
        tokens, clip-major: what `fit` and `restore` both start from."""
        self._tokens = bank.tokens
        self._clip_of, self._t_of = np.nonzero(bank.valid_time())
        return self._clip_of, self._t_of

    @property
    def n_bank_tokens(self) -> list[int]:
        """Bank tokens kept per band (all valid tokens without a coreset)."""
        return [len(k) for k in self.keep]

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
               bank_groups: np.ndarray | None, query_groups: np.ndarray | None,
               proj: BoundProjection | None = None) -> np.ndarray:
        """(Mq, D) search vectors vs band bank (Nb, D) -> (Mq,) calibrated distances;
        ``proj``: the band's projection when candidates come from the bounded search."""
        p = self.p
        if proj is not None:
            dist, idx = bounded_knn_search(q, xb, p.k_candidates if p.ldn else 1, bank_groups,
                                           query_groups, projection=proj, fallback=False,
                                           candidates=p.search_candidates,
                                           stats=self.search_stats, **p.search())
            return ldn_from_candidates(dist, idx, rho, p.eps)[0] if p.ldn else dist[:, 0]
        if p.ldn:
            s, _ = ldn_scores(q, xb, rho, p.eps, p.k_candidates, bank_groups, query_groups,
                              normalize=False, **p.search())
            return s
        dist, _ = knn_search(q, xb, 1, bank_groups, query_groups, normalize=False, **p.search())
        return dist[:, 0]

    def state(self) -> dict[str, np.ndarray]:
        """Every array `fit` computes beyond the bank itself (what `restore` reads back):
        per band the kept token positions, densities and projection; the self maps."""
        out = {"k": np.array(self.k), "self_clips": self.self_clips,
               "self_maps": self.self_maps,
               "search_stats": np.array([self.search_stats.queries, self.search_stats.certified])}
        for b, (keep, rho, proj) in enumerate(zip(self.keep, self.rho, self.projections)):
            out[f"keep_{b}"] = keep
            if rho is not None:
                out[f"rho_{b}"] = rho
            if proj is not None:
                out[f"mu_{b}"], out[f"components_{b}"] = proj.mu, proj.components
        return out

    def restore(self, bank: ClipFeatures, state: dict[str, np.ndarray],
                source: Path | None = None) -> "FinePatchScorer":
        """This scorer as `fit` (bank) would leave it, from a `state` of the same bank and
        settings (ValueError when the state does not fit the bank's shape)."""
        n, t, nb, _ = bank.tokens.shape
        if state["self_maps"].shape != (n, t, nb):
            raise ValueError(f"stored self maps {state['self_maps'].shape} != bank {(n, t, nb)}")
        clip_of, _ = self._attach(bank)
        self.k = int(state["k"])
        self.self_clips, self.self_maps = state["self_clips"], state["self_maps"]
        self.keep = [state[f"keep_{b}"] for b in range(nb)]
        if any(len(k) and k.max() >= len(clip_of) for k in self.keep):
            raise ValueError("stored token positions exceed the bank's valid tokens")
        self.rho = [state.get(f"rho_{b}") for b in range(nb)]
        self.projections = [BoundProjection.from_arrays(state[f"mu_{b}"], state[f"components_{b}"])
                            if f"mu_{b}" in state else None for b in range(nb)]
        self.search_stats = SearchStats(*(int(v) for v in state["search_stats"]))
        self.restored_from = source
        return self

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
            out[q_clip, q_t, b] = self._match(q, xb, self.rho[b], None, None,
                                              self.projections[b])
            del xb, q
        self._maps_cache[key] = out
        while len(self._maps_cache) > 2:
            self._maps_cache.popitem(last=False)
        return out.copy()


def clear_scorer_cache() -> None:
    """Forget the fitted scorers cached in memory (a benchmark timing a fit from scratch);
    fits stored on disk (`stored_fits`) stay."""
    _SCORERS.clear()


_FIT_FOLDERS: list[Path] = []


@contextlib.contextmanager
def stored_fits(folder: str | Path | None):
    """Within the block, fitted scorers are read from and written to ``folder`` (None: the
    block stores nothing). See the module docstring for the key."""
    if folder is None:
        yield
        return
    _FIT_FOLDERS.append(Path(folder))
    try:
        yield
    finally:
        _FIT_FOLDERS.pop()


def stored_fit_path(folder: Path, bank_hash: str, settings: FineParams) -> Path:
    """Where the fit of (bank content hash, scorer settings) by the current fitting code is
    stored in ``folder``: ``<code hash prefix>-<key>.npz``, the key hashing all three."""
    from asdlib.fingerprint import module_code_hash

    code = module_code_hash(__name__)
    h = hashlib.sha256()
    for part in (bank_hash, repr(settings), code):
        h.update(part.encode() + b"\x00")
    return folder / f"{code[:16]}-{h.hexdigest()}.npz"


def _remove_other_code_fits(path: Path) -> None:
    """Delete the stored fits beside ``path`` written by other code (never read again: their
    key differs); ``path``'s name begins with the current code's prefix."""
    keep = path.name.split("-", 1)[0] + "-"
    for old in path.parent.glob("*.npz"):
        if not old.name.startswith(keep):
            old.unlink(missing_ok=True)


def _load_stored(path: Path, settings: FineParams, bank: ClipFeatures) -> FinePatchScorer | None:
    """The fit stored at ``path``, or None when there is none or it cannot be read (an
    unreadable file is refitted and overwritten)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as state:
            return FinePatchScorer(settings).restore(bank, dict(state), source=path)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def shared_scorer(bank: ClipFeatures, p: FineParams) -> FinePatchScorer:
    """The fitted FinePatchScorer for (bank content, scorer settings): fine_broad and
    fine_selective of one machine share one fit (the bank-against-bank search is the
    cost of the fine-grained branches). The last ``_SCORERS_KEPT`` stay in memory; inside
    `stored_fits` every fit is also kept on disk for later runs."""
    settings = p.scorer()
    bank_hash = _fingerprint(bank)
    key = (bank_hash, settings)
    scorer = _SCORERS.get(key)
    if scorer is not None:
        _SCORERS.move_to_end(key)
        return scorer
    path = stored_fit_path(_FIT_FOLDERS[-1], bank_hash, settings) if _FIT_FOLDERS else None
    scorer = _load_stored(path, settings, bank) if path is not None else None
    if scorer is None:
        scorer = FinePatchScorer(settings).fit(bank)
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, **scorer.state())
            atomic.write_bytes(path, buffer.getvalue())
            _remove_other_code_fits(path)
    _SCORERS[key] = scorer
    while len(_SCORERS) > _SCORERS_KEPT:
        _SCORERS.popitem(last=False)
    return scorer

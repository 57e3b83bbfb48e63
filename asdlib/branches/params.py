"""Typed parameters of the scoring branches: every default defined once (`asdlib.branches`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from asdlib.knn import METRICS

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
    search; None = all).

    ``search_dim`` (Euclidean only): None searches every token exactly (flat); an int
    searches candidates in the top ``search_dim`` principal directions of each band bank
    (plus the residual norm, a lower bound of the distance) and re-ranks the
    ``search_candidates`` best by their exact distance (`asdlib.bounded_knn`, approximate:
    its recall and score error are measured in benchmarks/dcase_rehearsal.py).

    ``ivf_lists`` (approximate): None searches flat; an int searches every band bank through
    a faiss inverted-file index of that many k-means cells (capped by the bank size), each
    query visiting its ``ivf_probe`` nearest cells, for the densities and the test maps."""

    metric: str = "euclidean"
    ldn: bool = True
    k_candidates: int | None = 32
    coreset: float | None = None
    coreset_proj: int | None = 64
    seed: int = 0
    n_self: int | None = None
    search_dim: int | None = None
    search_candidates: int = 128
    ivf_lists: int | None = None
    ivf_probe: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ivf_lists is not None:
            if self.ivf_lists < 1 or self.ivf_probe < 1:
                raise ValueError("ivf_lists and ivf_probe must be >= 1")
            if self.search_dim is not None:
                raise ValueError("give search_dim or ivf_lists, not both")
            if self.k_candidates is None:
                raise ValueError("ivf_lists needs k_candidates (LDN over all tokens is exact)")
            if self.backend != "faiss":
                raise ValueError("ivf_lists needs backend='faiss'")
        if self.search_dim is not None:
            if self.metric != "euclidean":
                raise ValueError("search_dim needs metric='euclidean' (the bound is Euclidean)")
            if self.search_dim < 1:
                raise ValueError(f"search_dim must be >= 1 or None, got {self.search_dim}")
            if self.ldn and self.k_candidates is None:
                raise ValueError("search_dim needs k_candidates (LDN over all tokens is exact)")
            if self.search_candidates < max(self.k_ldn, self.k_candidates or 1):
                raise ValueError("search_candidates must be >= k_ldn and k_candidates")
        if self.coreset is not None and not 0 < self.coreset <= 1:
            raise ValueError(f"coreset must be a fraction in (0, 1] or None, got {self.coreset}")
        if self.n_self is not None and self.n_self < 2:
            raise ValueError("n_self must be >= 2 or None")

    def search(self) -> dict:
        """`KnnParams.search`, and the inverted-file setting when one is given."""
        kw = super().search()
        if self.ivf_lists is not None:
            kw["ivf"] = (self.ivf_lists, self.ivf_probe)
        return kw

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

"""The branch interface: fit on a bank, score test clips, leave-one-out self-scores, and
the domain handling every branch shares (`asdlib.branches`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from asdlib.branches.params import KnnParams
from asdlib.features import ClipFeatures


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


def z_stats(self_scores: np.ndarray) -> tuple[float, float]:
    """Mean and std (ddof 0) of the finite self-scores; std floored so division is safe."""
    s = np.asarray(self_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite self-scores to calibrate with")
    sd = float(s.std())
    return float(s.mean()), sd if sd > 1e-12 else 1.0


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
            self._parts = [_Part("union", np.arange(n), core, own, *z_stats(own))]
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
            parts.append(_Part(dom, rows, core, own, *z_stats(own)))
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

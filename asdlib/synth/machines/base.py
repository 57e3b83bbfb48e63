"""The interface of a machine sound model (`Machine`), its fault style (`FaultStyle`) and
the attribute grid helper (`grid`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaultStyle:
    """How the three anomaly kinds sound on one machine (ranges are drawn per clip).

    transient_hz: band of the impact modes; transient_db: impact peak re the clip RMS;
    narrow_hz: fault-tone frequency range; narrow_db: fault power re the normal sound's
    power in the third-octave band around the tone; tilt_db: |spectral tilt| in dB/octave
    re 1 kHz; noise_db: added broadband noise re the clip RMS; wobble: relative speed
    modulation depth; broad_types: which broad subtypes this machine uses.
    """

    transient_hz: tuple[float, float]
    transient_db: tuple[float, float]
    narrow_hz: tuple[float, float]
    narrow_db: tuple[float, float]
    tilt_db: tuple[float, float] = (1.2, 2.2)
    noise_db: tuple[float, float] = (-14.0, -9.0)
    wobble: tuple[float, float] = (0.015, 0.035)
    broad_types: tuple[str, ...] = ("tilt", "noise", "speed")


class Machine:
    """One machine type: attribute combinations per domain, a per-clip operating condition,
    the near-field sound model and its fault style.

    A model draws everything from the clip's generator ``rng``, in a fixed order: the
    order of the draws is part of the dataset's bytes.
    """

    name = ""
    hidden = False  # attribute values hidden in names ("noAttribute")
    drift = 0.004  # relative slow speed drift of normal operation
    fault: FaultStyle

    def combos(self, domain: str) -> list[dict[str, str]]:
        """Attribute combinations (key -> value, in name order) of ``domain``."""
        raise NotImplementedError

    def condition(self, rng: np.random.Generator, combo: dict[str, str], domain: str) -> dict:
        """The clip's operating condition: the combination's settings plus per-clip
        variation."""
        raise NotImplementedError

    def render(self, rng: np.random.Generator, cond: dict, n: int, sr: int,
               speed: np.ndarray) -> np.ndarray:
        """Near-field machine sound (N,), arbitrary scale; ``speed`` multiplies all rates."""
        raise NotImplementedError

    def activity(self, cond: dict, n: int, sr: int, speed: np.ndarray) -> np.ndarray | None:
        """Envelope (N,) in [0, 1] gating a narrowband fault (None = always on)."""
        return None


def grid(**values) -> list[dict[str, str]]:
    """All combinations of attribute values, first key varying slowest."""
    combos = [{}]
    for key, vals in values.items():
        combos = [dict(c, **{key: str(v)}) for c in combos for v in vals]
    return combos

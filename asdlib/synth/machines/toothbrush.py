"""ToothBrush: a sonic electric toothbrush in use (2026 evaluation set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class ToothBrush(Machine):
    """Sonic toothbrush: a resonant magnetic drive oscillating at about 260 Hz with 24
    harmonics (odd ones emphasised, the handle's body resonance at 1.5-2.4 kHz lifting
    those near it). The bristles scrub the teeth: band-pass noise (2.5-4.5 kHz) that
    follows the hand's irregular strokes (2-4 Hz) and is amplitude-modulated at twice the
    drive rate; contact pressure damps the drive and pulls its pitch down slightly.

    Attributes: the brushing mode (``1`` clean: steady; ``2`` white: the drive pulses at
    about 4 Hz, on 60 % of each period; ``3`` sensitive: 6 dB weaker, 5 % lower) and the
    brush head. Domain shift: another head (``head_B``): heavier, so a lower drive
    frequency (248 instead of 261 Hz), weaker odd harmonics and louder scrubbing.
    """

    name = "ToothBrush"
    drift = 0.003
    fault = FaultStyle(transient_hz=(1500, 6000), transient_db=(6.0, 12.0),
                       narrow_hz=(1000, 5000), narrow_db=(1.0, 7.0))
    #: mode -> (drive frequency factor, pulse rate in Hz (0 = steady), drive level in dB)
    modes = {"1": (1.0, 0.0, 0.0), "2": (1.0, 4.0, 0.0), "3": (0.95, 0.0, -6.0)}

    def combos(self, domain):
        if domain == "source":
            return grid(mode=(1, 2, 3), head=("A",))
        return grid(mode=(1, 2), head=("B",))

    def condition(self, rng, combo, domain):
        factor, pulse_hz, level_db = self.modes[combo["mode"]]
        head_b = combo["head"] == "B"
        f0 = (248.0 if head_b else 261.0) * factor * (1 + rng.uniform(-0.01, 0.01))
        k = np.arange(1, 25)
        body_fc = rng.uniform(1500, 2400)
        odd = 1.0 + (0.25 if head_b else 0.6) * (k % 2 == 1)
        amps = (k ** -1.3 * odd * (1 + 4.0 * sg.resonance(k * f0, body_fc, 5.0))
                * 10 ** (rng.normal(0, 1.5, k.size) / 20))
        return {
            "f0": f0,
            "amps": amps,
            "pulse_hz": pulse_hz * (1 + rng.uniform(-0.03, 0.03)),
            "pulse_t0": rng.uniform(0.0, 1.0),
            "drive_db": level_db + rng.normal(0.0, 1.0),
            "scrub_db": rng.normal(-8.0 + (3.0 if head_b else 0.0), 1.5),
            "scrub_fc": rng.uniform(2500, 4500),
            "stroke_hz": rng.uniform(2.0, 4.0),
            "load": rng.uniform(0.1, 0.2),
            "phis": rng.uniform(0, 2 * np.pi, 26),
        }

    def _gate(self, cond, n, sr, speed):
        """Drive envelope of the pulsing mode (N,) in [0.45, 1], None when steady."""
        if not cond["pulse_hz"]:
            return None
        clock = np.cumsum(speed) / sr * cond["pulse_hz"] + cond["pulse_t0"]
        on = (np.mod(clock, 1.0) < 0.6).astype(float)
        ramp = max(1, int(0.008 * sr))
        on = np.convolve(on, np.ones(ramp) / ramp, mode="same")
        return 0.45 + 0.55 * on

    def activity(self, cond, n, sr, speed):
        return self._gate(cond, n, sr, speed)

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        contact = np.clip(0.7 + 0.25 * sg.slow(rng, n, sr, cond["stroke_hz"]), 0.3, 1.1)
        f0 = cond["f0"] * speed * (1 - 0.01 * cond["load"] * contact)
        drive_phase = sg.phase(f0, sr, cond["phis"][0])
        drive = sg.unit(sg.harmonics(drive_phase, cond["amps"], cond["phis"][1:25],
                                     f0.max(), sr))
        env = 1.0 - cond["load"] * contact
        gate = self._gate(cond, n, sr, speed)
        if gate is not None:
            env = env * gate
        scrub = sg.noise(rng, n, sg.resonance(f, cond["scrub_fc"], 0.7) * sg.highpass(f, 800.0))
        scrub = scrub * contact * env * (1 + 0.5 * np.sin(2 * drive_phase + cond["phis"][25]))
        return sg.db(cond["drive_db"]) * drive * env + sg.db(cond["scrub_db"]) * scrub

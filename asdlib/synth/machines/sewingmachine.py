"""SewingMachine: a domestic lockstitch sewing machine sewing fabric (2026 evaluation
set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class SewingMachine(Machine):
    """Lockstitch sewing machine: a universal motor (8 harmonics, brush noise chopped at
    the 12 commutator segments) drives the main shaft by a belt (11.5-12.5 motor turns
    per stitch). Each stitch repeats the same mechanism sounds, drawn once per clip and
    repeated with ±1 dB and ±1 ms jitter: the needle piercing the fabric (a low thump),
    the take-up lever's thread click later in the cycle, and two ticks of the rotary hook
    (it turns twice per stitch).

    Attributes: stitches per second and fabric (a heavier fabric loads the motor, gives
    louder and lower needle thumps). Domain shift: faster sewing (12 stitches/s) through
    denim or leather.
    """

    name = "SewingMachine"
    drift = 0.006
    fault = FaultStyle(transient_hz=(2500, 7000), transient_db=(2.0, 8.0),
                       narrow_hz=(1500, 6000), narrow_db=(0.0, 6.0))
    segments = 12
    #: fabric -> heaviness (0 = light cotton)
    fabrics = {"cot": 0.0, "syn": 0.3, "den": 1.0, "lea": 1.4}

    def combos(self, domain):
        if domain == "source":
            return grid(spd=(5, 7, 9), fab=("cot", "syn"))
        return grid(spd=(12,), fab=("den", "lea"))

    def condition(self, rng, combo, domain):
        heavy = self.fabrics[combo["fab"]]
        sps = float(combo["spd"]) * (1 - 0.03 * heavy) * (1 + rng.uniform(-0.02, 0.02))
        return {
            "sps": sps,
            "ratio": rng.uniform(11.5, 12.5),
            "t0": rng.uniform(0.0, 1.0),
            "motor_amps": (np.array([1.0, 0.7, 0.45, 0.3, 0.2, 0.12, 0.08, 0.05])
                           * 10 ** (rng.normal(0, 2.0, 8) / 20)),
            "motor_db": rng.normal(-4.0 + 1.5 * heavy, 1.5),
            "brush_db": rng.normal(-12.0, 1.5),
            "brush_fc": rng.uniform(3000, 5000),
            "needle_db": rng.normal(6.0 + 2.0 * heavy, 1.5),
            "needle_hz": (250.0 - 60.0 * heavy) * rng.uniform(0.9, 1.1),
            "click_at": rng.uniform(0.3, 0.45),
            "click_db": rng.normal(2.0, 1.5),
            "hook_db": rng.normal(-3.0, 1.5),
            "phis": rng.uniform(0, 2 * np.pi, 12),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fr = cond["sps"] * cond["ratio"] * speed
        rotor = sg.phase(fr, sr, cond["phis"][0])
        motor = sg.unit(sg.harmonics(rotor, cond["motor_amps"], cond["phis"][1:9], fr.max(), sr))
        brush = sg.noise(rng, n, sg.resonance(f, cond["brush_fc"], 1.0) * sg.highpass(f, 500.0))
        brush = brush * (0.6 + 0.4 * np.abs(np.sin(self.segments / 2 * rotor + cond["phis"][9])))
        x = sg.db(cond["motor_db"]) * motor + sg.db(cond["brush_db"]) * brush
        level = sg.rms(x)
        # the stitch cycle (main-shaft turns), and the mechanism sounds at fixed points of it
        cycle = np.cumsum(cond["sps"] * speed) / sr + cond["t0"]
        lo = cond["needle_hz"]
        sounds = (
            (0.0, cond["needle_db"], sg.impact(rng, sr, 0.05, lo, 3 * lo, noise_part=0.3)),
            (cond["click_at"], cond["click_db"], sg.impact(rng, sr, 0.015, 1800.0, 4500.0,
                                                           n_modes=2)),
            (0.25, cond["hook_db"], sg.impact(rng, sr, 0.01, 2500.0, 5500.0, n_modes=2)),
            (0.75, cond["hook_db"], sg.impact(rng, sr, 0.01, 2500.0, 5500.0, n_modes=2)),
        )
        for at, gain_db, sound in sounds:
            for s in np.flatnonzero(np.diff(np.floor(cycle - at)) > 0):
                start = int(s) + int(rng.integers(-int(0.001 * sr), int(0.001 * sr) + 1))
                sg.add_at(x, sg.db(gain_db + rng.normal(0, 1.0)) * level * sound, max(0, start))
        return x

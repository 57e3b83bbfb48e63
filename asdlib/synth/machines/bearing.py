"""bearingEmu: a rotating shaft on rolling bearings (2026 development set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Bearing(Machine):
    """Rotating shaft on rolling bearings: shaft harmonics, faint ball-pass modulation of
    structural resonances excited by rolling noise, motor hum, broadband floor."""

    name = "bearingEmu"
    fault = FaultStyle(transient_hz=(1500, 6000), transient_db=(5.0, 11.0),
                       narrow_hz=(900, 5500), narrow_db=(-1.0, 5.0))

    def combos(self, domain):
        if domain == "source":
            return grid(vel=(6, 8, 10), loc=("A", "B"))
        return grid(vel=(14, 16), loc=("A", "B"))

    def condition(self, rng, combo, domain):
        vel = float(combo["vel"])
        loc_b = combo["loc"] == "B"
        return {
            "fr": vel * 2.5 * (1 + rng.uniform(-0.02, 0.02)),
            "res": [(3400.0 if loc_b else 2800.0) * (1 + rng.uniform(-0.04, 0.04)),
                    (4700.0 if loc_b else 5200.0) * (1 + rng.uniform(-0.04, 0.04)),
                    1300.0 * (1 + rng.uniform(-0.05, 0.05))],
            "res_q": rng.uniform(6, 12, 3),
            "res_db": rng.normal(0, 1.5, 3) + np.array([0.0, -3.0, -6.0]) + (2.0 if loc_b else 0.0),
            "am": rng.uniform(0.08, 0.25),
            "shaft_db": rng.normal(-4.0 + 0.4 * (vel - 6), 1.5),
            "hum_db": rng.normal(-14.0, 2.0),
            "floor_db": rng.normal(-12.0, 1.5),
            "floor_tilt": rng.normal(-3.0, 0.6),
            "shaft_amps": sg.db(-4.0) ** np.arange(8) * 10 ** (rng.normal(0, 2.0, 8) / 20),
            "phis": rng.uniform(0, 2 * np.pi, 16),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fr = cond["fr"] * speed
        shaft_phase = sg.phase(fr, sr, cond["phis"][0])
        shaft = sg.unit(sg.harmonics(shaft_phase, cond["shaft_amps"], cond["phis"][1:9],
                                     fr.max(), sr))
        gain = sum(sg.db(g) * sg.resonance(f, fc, q)
                   for fc, q, g in zip(cond["res"], cond["res_q"], cond["res_db"]))
        rolling = sg.noise(rng, n, gain)
        bpfo = 3.05 * fr
        bpfi = 4.95 * fr
        mod = (1.0 + cond["am"] * np.sin(sg.phase(bpfo, sr, cond["phis"][9]))
               + 0.5 * cond["am"] * np.sin(sg.phase(bpfi, sr, cond["phis"][10])))
        rolling = rolling * mod
        hum = sg.unit(sg.harmonics(sg.phase(np.full(n, 100.0), sr, cond["phis"][11]),
                                   [1.0, 0.5, 0.25], cond["phis"][12:15], 100.0, sr))
        floor = sg.noise(rng, n, sg.tilt(f, cond["floor_tilt"]) * sg.highpass(f, 40.0))
        return (rolling + sg.db(cond["shaft_db"]) * shaft + sg.db(cond["hum_db"]) * hum
                + sg.db(cond["floor_db"]) * floor)

"""gearboxEmu: a gearbox driven by a DC motor (2026 development set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Gearbox(Machine):
    """Gearbox driven by a DC motor: gear-mesh harmonics amplitude-modulated at the shaft
    rate (sidebands), load-dependent mesh level, housing resonances, motor noise."""

    name = "gearboxEmu"
    teeth = 23
    fault = FaultStyle(transient_hz=(1000, 5000), transient_db=(5.0, 11.0),
                       narrow_hz=(600, 4500), narrow_db=(0.0, 6.0))

    def combos(self, domain):
        if domain == "source":
            return grid(volt=("1.0", "1.3", "1.6"), wt=(0, 30))
        return grid(volt=("2.0", "2.3"), wt=(60,))

    def condition(self, rng, combo, domain):
        volt, wt = float(combo["volt"]), float(combo["wt"])
        return {
            "fs": 10.0 * volt * (1 + rng.uniform(-0.02, 0.02)) * (1 - 0.001 * wt),
            "mesh_amps": (np.array([1.0, 0.6, 0.35, 0.2, 0.12, 0.07])
                          * 10 ** (rng.normal(0, 2.0, 6) / 20)),
            "mesh_db": rng.normal(-2.0 + 0.05 * wt, 1.5),
            "sb1": rng.uniform(0.1, 0.3),
            "sb2": rng.uniform(0.03, 0.12),
            "res": [1800.0 * (1 + rng.uniform(-0.05, 0.05)),
                    3600.0 * (1 + rng.uniform(-0.05, 0.05))],
            "res_db": rng.normal([-6.0, -10.0], 1.5),
            "floor_tilt": rng.normal(-2.5, 0.6),
            "floor_db": rng.normal(-10.0 + 0.03 * wt, 1.5),
            "motor_db": rng.normal(-16.0, 2.0),
            "phis": rng.uniform(0, 2 * np.pi, 16),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fs = cond["fs"] * speed
        fm = self.teeth * fs
        shaft_phase = sg.phase(fs, sr, cond["phis"][0])
        mesh = sg.unit(sg.harmonics(sg.phase(fm, sr, cond["phis"][1]), cond["mesh_amps"],
                                    cond["phis"][2:8], fm.max(), sr))
        mesh = mesh * (1.0 + cond["sb1"] * np.cos(shaft_phase)
                       + cond["sb2"] * np.cos(2 * shaft_phase + cond["phis"][8]))
        gain = (sg.tilt(f, cond["floor_tilt"]) * sg.highpass(f, 40.0)
                + sum(sg.db(g) * sg.resonance(f, fc, 8.0)
                      for fc, g in zip(cond["res"], cond["res_db"])))
        floor = sg.noise(rng, n, gain)
        motor = sg.unit(sg.harmonics(shaft_phase * 6, [1.0, 0.5, 0.3], cond["phis"][9:12],
                                     6 * fs.max(), sr))
        return (sg.db(cond["mesh_db"]) * mesh + sg.db(cond["floor_db"]) * floor
                + sg.db(cond["motor_db"]) * motor)

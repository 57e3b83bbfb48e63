"""fan: an axial fan (2026 development set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Fan(Machine):
    """Axial fan: blade-pass harmonics, faint shaft-rate imbalance, broadband airflow noise
    with slow turbulence fluctuation. Domain shift: another fan model (7 instead of 5
    blades)."""

    name = "fan"
    fault = FaultStyle(transient_hz=(800, 4500), transient_db=(4.0, 10.0),
                       narrow_hz=(1200, 6000), narrow_db=(-4.0, 2.0))

    def combos(self, domain):
        if domain == "source":
            return grid(bld=(5,), spd=(1, 2, 3))
        return grid(bld=(7,), spd=(1, 2))

    def condition(self, rng, combo, domain):
        spd = int(combo["spd"])
        k = np.arange(1, 13)
        return {
            "blades": int(combo["bld"]),
            "fr": (11.0 + 5.0 * spd) * (1 + rng.uniform(-0.02, 0.02)),
            "bpf_amps": k ** -1.0 * 10 ** (rng.normal(0, 2.0, 12) / 20),
            "bpf_db": rng.normal(-3.0, 1.5),
            "imb_db": rng.normal(-20.0, 3.0),
            "air_fc": (500.0 + 250.0 * spd) * (1 + rng.uniform(-0.1, 0.1)),
            "air_tilt": rng.normal(-1.0, 0.5),
            "hump_fc": rng.uniform(1800, 2600),
            "hump_db": rng.normal(-8.0, 2.0),
            "turb": rng.uniform(0.05, 0.15),
            "phis": rng.uniform(0, 2 * np.pi, 16),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fr = cond["fr"] * speed
        bpf = cond["blades"] * fr
        tones = sg.unit(sg.harmonics(sg.phase(bpf, sr, cond["phis"][0]), cond["bpf_amps"],
                                     cond["phis"][1:13], bpf.max(), sr))
        imb = np.sin(sg.phase(fr, sr, cond["phis"][13]))
        air_gain = (sg.lowpass(f, cond["air_fc"], 1) * sg.tilt(f, cond["air_tilt"])
                    + sg.db(cond["hump_db"]) * sg.resonance(f, cond["hump_fc"], 2.0))
        air = sg.noise(rng, n, air_gain * sg.highpass(f, 30.0))
        air = air * (1.0 + cond["turb"] * sg.slow(rng, n, sr, 2.0))
        return air + sg.db(cond["bpf_db"]) * tones + sg.db(cond["imb_db"]) * sg.unit(imb)

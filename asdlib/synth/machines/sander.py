"""Sander: a random orbital sander working a wooden board (2026 evaluation set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Sander(Machine):
    """Random orbital sander: a brushed motor (167-217 Hz at dial 3-6, 12 harmonics)
    carries the eccentric pad and an 8-blade dust-extraction fan (blade-pass at 8x the
    motor rate), plus broadband extraction airflow. The abrasive on the wood gives
    band-pass friction noise, amplitude-modulated by the orbit (once per motor turn) and
    following the operator's hand pressure (slow, 0.3-1 Hz, ±15-30 %); more pressure
    loads the motor, which slows by up to 2-4 %.

    Attributes: grit and speed dial. A coarser grit is louder and lower (friction band
    centre about 1.5 kHz at grit 80, x sqrt(grit / 80)). Domain shift: fine grit 240 at
    other speeds.
    """

    name = "Sander"
    fault = FaultStyle(transient_hz=(1000, 5000), transient_db=(2.0, 8.0),
                       narrow_hz=(2000, 6000), narrow_db=(-3.0, 3.0))
    fan_blades = 8

    def combos(self, domain):
        if domain == "source":
            return grid(grit=(80, 120), spd=(3, 5))
        return grid(grit=(240,), spd=(4, 6))

    def condition(self, rng, combo, domain):
        grit, dial = float(combo["grit"]), float(combo["spd"])
        k = np.arange(1, 13)
        return {
            "fr": (7000.0 + 1000.0 * dial) / 60.0 * (1 + rng.uniform(-0.02, 0.02)),
            "motor_amps": k ** -1.0 * 10 ** (rng.normal(0, 2.0, k.size) / 20),
            "motor_db": rng.normal(-6.0, 1.5),
            "fan_db": rng.normal(-9.0, 1.5),
            "air_db": rng.normal(-10.0, 1.5),
            "sand_db": rng.normal(2.0 - 4.0 * np.log2(grit / 80.0), 1.5),
            "sand_fc": 1500.0 * np.sqrt(grit / 80.0) * rng.uniform(0.9, 1.1),
            "press": rng.uniform(0.15, 0.3),
            "press_hz": rng.uniform(0.3, 1.0),
            "droop": rng.uniform(0.02, 0.04),
            "orbit_am": rng.uniform(0.2, 0.4),
            "phis": rng.uniform(0, 2 * np.pi, 18),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        pressure = np.clip(1 + cond["press"] * sg.slow(rng, n, sr, cond["press_hz"]), 0.3, 1.7)
        fr = cond["fr"] * speed * (1 - cond["droop"] * (pressure - 1))
        rotor = sg.phase(fr, sr, cond["phis"][0])
        motor = sg.unit(sg.harmonics(rotor, cond["motor_amps"], cond["phis"][1:13], fr.max(), sr))
        fan = sg.unit(sg.harmonics(rotor * self.fan_blades, [1.0, 0.5, 0.25],
                                   cond["phis"][13:16], self.fan_blades * fr.max(), sr))
        sand = sg.noise(rng, n, sg.resonance(f, cond["sand_fc"], 0.6) * sg.highpass(f, 200.0))
        sand = sand * pressure * (1 + cond["orbit_am"] * np.sin(rotor + cond["phis"][16]))
        air = sg.noise(rng, n, sg.tilt(f, -1.5) * sg.highpass(f, 100.0))
        return (sg.db(cond["motor_db"]) * motor + sg.db(cond["fan_db"]) * fan
                + sg.db(cond["sand_db"]) * sand + sg.db(cond["air_db"]) * air)

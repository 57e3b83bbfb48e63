"""sliderEmu: a linear slide on a ball screw (2026 development set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Slider(Machine):
    """Linear slide on a ball screw: back-and-forth strokes with trapezoidal velocity;
    servo whine and friction noise follow the velocity, end stops thump, idle between."""

    name = "sliderEmu"
    drift = 0.002
    fault = FaultStyle(transient_hz=(500, 3500), transient_db=(3.0, 8.0),
                       narrow_hz=(1800, 4500), narrow_db=(-2.0, 4.0))
    stroke_m = 0.25

    def combos(self, domain):
        if domain == "source":
            return grid(vel=(300, 400, 500), ac=(1, 2))
        return grid(vel=(700,), ac=(3, 4))

    def condition(self, rng, combo, domain):
        return {
            "v": float(combo["vel"]) / 1000.0 * (1 + rng.uniform(-0.03, 0.03)),
            "a": float(combo["ac"]) * (1 + rng.uniform(-0.05, 0.05)),
            "dwell": rng.uniform(0.15, 0.3),
            "t0": rng.uniform(0.0, 2.0),
            "whine_db": rng.normal(-6.0, 1.5),
            "fric_db": rng.normal(0.0, 1.0),
            "fric_fc": rng.uniform(1200, 2200),
            "thump_db": rng.normal(4.0, 1.5),
            "idle_db": rng.normal(-18.0, 2.0),
            "whine_amps": np.array([1.0, 0.5, 0.3, 0.15]) * 10 ** (rng.normal(0, 2.0, 4) / 20),
            "phis": rng.uniform(0, 2 * np.pi, 8),
        }

    def _velocity(self, cond, n, sr, speed):
        """|v(t)| (N,) of the stroke cycle, stroke end sample indices."""
        v, a = cond["v"], cond["a"]
        ta = min(v / a, 0.5 * self.stroke_m / v)
        tm = self.stroke_m / v + ta  # trapezoid: cruise + two half ramps
        period = 2 * (tm + cond["dwell"])
        # clock: speed irregularity distorts the cycle timing
        clock = np.cumsum(speed) / sr + cond["t0"]
        tc = np.mod(clock, period)
        tc = np.where(tc >= tm + cond["dwell"], tc - tm - cond["dwell"], tc)
        moving = tc < tm
        ramp = np.minimum(1.0, np.minimum(tc, tm - tc) / ta)
        vel = np.where(moving, v * np.clip(ramp, 0.0, 1.0), 0.0) * speed
        stop = np.flatnonzero(np.diff(moving.astype(np.int8)) < 0)
        return vel, stop

    def activity(self, cond, n, sr, speed):
        vel, _ = self._velocity(cond, n, sr, speed)
        return np.clip(vel / cond["v"], 0.0, 1.0)

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        vel, stops = self._velocity(cond, n, sr, speed)
        rel = vel / cond["v"]
        motor_hz = 900.0 * vel / 0.4 + 1e-3
        whine = sg.harmonics(sg.phase(motor_hz, sr, cond["phis"][0]), cond["whine_amps"],
                             cond["phis"][1:5], float(motor_hz.max()), sr)
        whine = whine * np.sqrt(rel)
        fric = sg.noise(rng, n, sg.resonance(f, cond["fric_fc"], 0.8) * sg.highpass(f, 300.0))
        fric = fric * rel
        screw = sg.noise(rng, n, sg.lowpass(f, 250.0, 2) * sg.highpass(f, 30.0))
        screw = screw * rel * (1 + 0.4 * np.sin(sg.phase(vel / 0.01, sr, cond["phis"][5])))
        x = (sg.db(cond["whine_db"]) * whine / 0.7 + sg.db(cond["fric_db"]) * fric
             + sg.db(cond["fric_db"] - 6.0) * screw)
        level = sg.rms(x)
        idle = sg.noise(rng, n, sg.tilt(f, -3.0) * sg.highpass(f, 40.0))
        x = x + sg.db(cond["idle_db"]) * level * idle
        for s in stops:
            thump = sg.impact(rng, sr, rng.uniform(0.03, 0.06), 90.0, 400.0, noise_part=0.2)
            sg.add_at(x, sg.db(cond["thump_db"] + rng.normal(0, 1.0)) * level * thump, int(s))
        return x

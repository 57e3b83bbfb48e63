"""valveEmu: a solenoid valve in a pumped line (2026 development set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class Valve(Machine):
    """Solenoid valve in a pumped line: open/close clicks exciting body modes, flow hiss
    while open, solenoid buzz while energised, continuous pump hum and pipe noise. The
    pattern attribute sets the open/close timing, flow the hiss level. Domain shift: new
    patterns at high flow."""

    name = "valveEmu"
    drift = 0.002
    fault = FaultStyle(transient_hz=(1200, 5000), transient_db=(-1.0, 5.0),
                       narrow_hz=(2000, 6500), narrow_db=(-11.0, -5.0),
                       tilt_db=(1.5, 3.0), noise_db=(-12.0, -7.0))
    patterns = {"00": (0.8, 0.4), "01": (1.1, 0.5), "02": (1.5, 0.3), "03": (0.9, 0.6),
                "04": (1.3, 0.35)}

    def combos(self, domain):
        if domain == "source":
            return grid(pat=("00", "01", "02"), flow=(2, 3))
        return grid(pat=("03", "04"), flow=(5,))

    def condition(self, rng, combo, domain):
        period, duty = self.patterns[combo["pat"]]
        flow = float(combo["flow"])
        return {
            "period": period * (1 + rng.uniform(-0.02, 0.02)),
            "duty": duty,
            "t0": rng.uniform(0, period),
            "modes": rng.uniform(0.95, 1.05, 3) * np.array([1900.0, 3300.0, 5100.0]),
            "click_db": rng.normal(6.0, 1.5),
            "hiss_db": rng.normal(-9.0 + 1.5 * flow, 1.5),
            "hiss_fc": rng.uniform(3000, 4500),
            "buzz_db": rng.normal(-14.0, 2.0),
            "pump_fr": rng.uniform(24.0, 26.0),
            "pump_db": rng.normal(-2.0, 1.5),
            "line_db": rng.normal(-11.0, 1.5),
            "line_tilt": rng.normal(-2.5, 0.5),
            "phis": rng.uniform(0, 2 * np.pi, 12),
        }

    def _open(self, cond, n, sr, speed):
        clock = np.cumsum(speed) / sr + cond["t0"]
        return np.mod(clock, cond["period"]) < cond["duty"] * cond["period"]

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        is_open = self._open(cond, n, sr, speed)
        ramp = max(1, int(0.02 * sr))
        env = np.convolve(is_open.astype(float), np.ones(ramp) / ramp, mode="same")
        hiss = sg.noise(rng, n, sg.resonance(f, cond["hiss_fc"], 1.2) * sg.highpass(f, 1000.0))
        buzz = sg.harmonics(sg.phase(np.full(n, 100.0), sr, cond["phis"][0]), [1.0, 0.6, 0.4, 0.2],
                            cond["phis"][1:5], 100.0, sr)
        pump_f = cond["pump_fr"] * speed
        pump = sg.unit(sg.harmonics(sg.phase(pump_f, sr, cond["phis"][5]),
                                    [1.0, 0.7, 0.5, 0.3, 0.2], cond["phis"][6:11], pump_f.max(),
                                    sr))
        pump = pump + 0.5 * sg.noise(rng, n, sg.lowpass(f, 300.0, 2) * sg.highpass(f, 20.0))
        line = sg.noise(rng, n, sg.tilt(f, cond["line_tilt"]) * sg.highpass(f, 200.0))
        x = (sg.db(cond["pump_db"]) * pump + sg.db(cond["line_db"]) * line
             + sg.db(cond["hiss_db"]) * hiss * env
             + sg.db(cond["buzz_db"]) * sg.unit(buzz) * env)
        level = sg.rms(x)
        edges = np.flatnonzero(np.diff(is_open.astype(np.int8)))
        t = np.arange(int(0.04 * sr)) / sr
        for e in edges:
            opening = is_open[e + 1]
            burst = np.zeros(t.size)
            for j, fc in enumerate(cond["modes"]):
                burst += np.exp(-t / rng.uniform(0.004, 0.01)) * np.sin(2 * np.pi * fc * t
                                                                       + rng.uniform(0, 6.3))
            if not opening:  # closing: seat impact, a low thunk as well
                burst += 1.5 * np.exp(-t / 0.012) * np.sin(2 * np.pi * rng.uniform(150, 250) * t)
            burst /= np.max(np.abs(burst)) + 1e-12
            gain = sg.db(cond["click_db"] + (0.0 if opening else 2.0) + rng.normal(0, 1.0))
            sg.add_at(x, gain * level * burst, int(e) + int(rng.integers(0, int(0.003 * sr))))
        return x

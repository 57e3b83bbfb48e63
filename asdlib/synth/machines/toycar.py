"""ToyCar (a toy car on a track) and ToyCarEmu (a toy car on a roller rig), of the 2026
development set; ToyTrain, the ToyCar model under other attributes, for the DCASE
2025-style mono set."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class ToyCar(Machine):
    """Toy car on a track: DC-motor whine (commutator harmonics), pinion gear mesh with
    sidebands, wheel/road rumble modulated by wheel rotation; the microphone position
    adds a reflection comb. Domain shift: another car at other speeds, other mic."""

    name = "ToyCar"
    fault = FaultStyle(transient_hz=(1000, 6000), transient_db=(2.0, 8.0),
                       narrow_hz=(2500, 6500), narrow_db=(1.0, 7.0))
    motor_hz = {1: 110.0, 2: 140.0, 3: 170.0, 4: 200.0}

    def combos(self, domain):
        if domain == "source":
            return grid(car=("A1", "A2"), spd=(1, 2, 3), mic=(1,))
        return grid(car=("B1",), spd=(2, 4), mic=(2,))

    def condition(self, rng, combo, domain):
        car = combo["car"]
        k = np.arange(1, 25)
        profile = np.exp(-0.12 * k) * (1 + 1.5 * (k % 6 == 0) + 0.6 * (k % 3 == 0))
        if car == "A2":
            profile = profile * (1 + 0.8 * (k % 2 == 1))
        if car == "B1":
            profile = np.exp(-0.08 * k) * (1 + 1.5 * (k % 10 == 0) + 0.5 * (k % 5 == 0))
        return {
            "fm": self.motor_hz[int(combo["spd"])] * (1.1 if car == "B1" else 1.0)
            * (1 + rng.uniform(-0.015, 0.015)),
            "motor_amps": profile * 10 ** (rng.normal(0, 1.0, k.size) / 20),
            "pinion": 12 if car != "B1" else 10,
            "ratio": 18.0 if car != "B1" else 15.0,
            "gear_db": rng.normal(-6.0, 1.5),
            "road_db": rng.normal(-4.0, 1.5),
            "road_fc": rng.uniform(250, 450),
            "mic_delay": (0.0004 if combo["mic"] == "1" else 0.0011) * (1 + rng.uniform(-0.1, 0.1)),
            "mic_refl": rng.uniform(0.3, 0.5),
            "phis": rng.uniform(0, 2 * np.pi, 40),
        }

    def _road(self, rng, cond, n, sr, fw, f):
        road = sg.noise(rng, n, sg.lowpass(f, cond["road_fc"], 2) * sg.highpass(f, 25.0))
        return road * (1 + 0.3 * np.sin(sg.phase(fw, sr, cond["phis"][39])))

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fm = cond["fm"] * speed
        ph = sg.phase(fm, sr, cond["phis"][0])
        motor = sg.unit(sg.harmonics(ph, cond["motor_amps"], cond["phis"][1:25], fm.max(), sr))
        fw = fm / cond["ratio"]
        gear = sg.harmonics(ph * cond["pinion"], [1.0, 0.4], cond["phis"][25:27],
                            cond["pinion"] * fm.max(), sr)
        gear = sg.unit(gear * (1 + 0.3 * np.cos(sg.phase(fw, sr, cond["phis"][27]))))
        road = self._road(rng, cond, n, sr, fw, f)
        hiss = sg.noise(rng, n, sg.tilt(f, -2.0) * sg.highpass(f, 500.0))
        x = (motor + sg.db(cond["gear_db"]) * gear + sg.db(cond["road_db"]) * road
             + sg.db(-18.0) * hiss)
        comb = np.abs(1 + cond["mic_refl"] * np.exp(-2j * np.pi * f * cond["mic_delay"]))
        return np.fft.irfft(np.fft.rfft(x) * comb, n)


class ToyCarEmu(ToyCar):
    """Toy car emulated on a roller rig: brighter motor with odd-harmonic emphasis, a PWM
    drive whine near 4 kHz, roller rumble with faint periodic joint clacks. Attributes are
    hidden (``noAttribute``); the hidden target condition runs faster on a rougher
    roller."""

    name = "ToyCarEmu"
    hidden = True
    fault = FaultStyle(transient_hz=(1200, 6000), transient_db=(3.0, 8.0),
                       narrow_hz=(1500, 6500), narrow_db=(-1.0, 5.0))

    def combos(self, domain):
        if domain == "source":
            return [{"rig": "s1"}, {"rig": "s2"}]
        return [{"rig": "t1"}]

    def condition(self, rng, combo, domain):
        rig = combo["rig"]
        k = np.arange(1, 25)
        profile = np.exp(-0.07 * k) * (1 + 0.9 * (k % 2 == 1))
        base = {"s1": 150.0, "s2": 175.0, "t1": 230.0}[rig]
        return {
            "fm": base * (1 + rng.uniform(-0.015, 0.015)),
            "motor_amps": profile * 10 ** (rng.normal(0, 1.0, k.size) / 20),
            "pinion": 9,
            "ratio": 12.0,
            "gear_db": rng.normal(-8.0, 1.5),
            "road_db": rng.normal(-3.0 + (3.0 if rig == "t1" else 0.0), 1.5),
            "road_fc": rng.uniform(350, 600),
            "pwm_hz": rng.uniform(3950, 4050),
            "pwm_db": rng.normal(-22.0, 2.0),
            "clack_db": rng.normal(-2.0 + (2.0 if rig == "t1" else 0.0), 1.5),
            "mic_delay": 0.0007 * (1 + rng.uniform(-0.1, 0.1)),
            "mic_refl": rng.uniform(0.2, 0.4),
            "phis": rng.uniform(0, 2 * np.pi, 40),
        }

    def _road(self, rng, cond, n, sr, fw, f):
        road = sg.noise(rng, n, sg.lowpass(f, cond["road_fc"], 2) * sg.highpass(f, 25.0))
        return road * (1 + 0.4 * np.sin(sg.phase(fw, sr, cond["phis"][39])))

    def render(self, rng, cond, n, sr, speed):
        x = super().render(rng, cond, n, sr, speed)
        level = sg.rms(x)
        t = np.arange(n) / sr
        pwm = np.sin(2 * np.pi * cond["pwm_hz"] * t + cond["phis"][30])
        x = x + sg.db(cond["pwm_db"]) * level * np.sqrt(2) * pwm
        # roller joint: one faint clack per roller turn (about 2.5 turns per second)
        turn = 0.4 * (1 + 0.02 * rng.standard_normal())
        first = rng.uniform(0, turn)
        for start in np.arange(first, n / sr, turn):
            clack = sg.impact(rng, sr, 0.02, 600.0, 2500.0, n_modes=2)
            sg.add_at(x, sg.db(cond["clack_db"]) * level * clack, int(start * sr))
        return x


class ToyTrain(ToyCar):
    """A toy train, rendered by the ToyCar model under other attribute names (for the
    DCASE 2025-style mono set, whose development machines include ToyTrain): locomotive
    ``N1``/``N2`` is the ToyCar model's car ``A1``/``A2`` and ``E1`` its car ``B1``, at the
    same speed levels and microphone positions. Domain shift: another locomotive at other
    speeds, another microphone."""

    name = "ToyTrain"
    locomotives = {"N1": "A1", "N2": "A2", "E1": "B1"}

    def combos(self, domain):
        if domain == "source":
            return grid(loco=("N1", "N2"), spd=(1, 2, 3), mic=(1,))
        return grid(loco=("E1",), spd=(2, 4), mic=(2,))

    def condition(self, rng, combo, domain):
        car = {"car": self.locomotives[combo["loco"]], "spd": combo["spd"], "mic": combo["mic"]}
        return super().condition(rng, car, domain)

"""ToyDrone: a hovering toy quadcopter (2026 evaluation set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine, grid


class ToyDrone(Machine):
    """Toy quadcopter hovering in place: four brushed coreless motors, each driving a
    propeller. Per rotor: a blade-pass harmonic series (10 harmonics) and a commutation
    whine at 6x the rotor rate. The four rotors run at rates a few percent apart, which
    the attitude control moves slowly and independently (1-4 Hz, 1-2.5 %), so the
    rotor tones beat. Rotor wash: low-passed broadband noise with a frame resonance
    (2.6-3.4 kHz), chopped at the blade-pass rates.

    Attributes: propeller type and payload in grams (a heavier drone spins its rotors
    faster, about 1.2 % per gram, and blows more wash). Domain shift: three-blade
    propellers (``prop_B``) turning about 17 % slower, so other blade-pass frequencies.
    """

    name = "ToyDrone"
    fault = FaultStyle(transient_hz=(2000, 7000), transient_db=(-2.0, 4.0),
                       narrow_hz=(2500, 6500), narrow_db=(-1.0, 5.0))
    n_rotors = 4

    def combos(self, domain):
        if domain == "source":
            return grid(prop=("A",), load=(0, 5, 10))
        return grid(prop=("B",), load=(0, 10))

    def condition(self, rng, combo, domain):
        blades = 2 if combo["prop"] == "A" else 3
        load = float(combo["load"])
        base = (180.0 if blades == 2 else 150.0) * (1 + 0.012 * load)
        k = np.arange(1, 11)
        return {
            "blades": blades,
            "fr": (base * (1 + rng.uniform(-0.02, 0.02))
                   * (1 + rng.uniform(-0.03, 0.03, self.n_rotors))),
            "ctrl": rng.uniform(0.01, 0.025),
            "ctrl_hz": rng.uniform(1.0, 4.0),
            "bpf_amps": k ** -1.2 * 10 ** (rng.normal(0, 2.0, (self.n_rotors, k.size)) / 20),
            "rotor_db": rng.normal(0.0, 1.0, self.n_rotors),
            "whine_db": rng.normal(-14.0, 2.0),
            "whine_amps": np.array([1.0, 0.4, 0.2]) * 10 ** (rng.normal(0, 2.0, 3) / 20),
            "wash_db": rng.normal(-3.0 + 0.1 * load, 1.5),
            "wash_fc": rng.uniform(900, 1600),
            "chop": rng.uniform(0.15, 0.35),
            "frame_fc": rng.uniform(2600, 3400),
            "frame_db": rng.normal(-10.0, 2.0),
            "phis": rng.uniform(0, 2 * np.pi, (self.n_rotors, 16)),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        blades = cond["blades"]
        tones = np.zeros(n)
        chop = np.zeros(n)
        for i in range(self.n_rotors):
            phis = cond["phis"][i]
            fr = cond["fr"][i] * speed * (1 + cond["ctrl"] * sg.slow(rng, n, sr, cond["ctrl_hz"]))
            rotor = sg.phase(fr, sr, phis[0])
            blade = sg.unit(sg.harmonics(rotor * blades, cond["bpf_amps"][i], phis[1:11],
                                         blades * fr.max(), sr))
            whine = sg.unit(sg.harmonics(rotor * 6, cond["whine_amps"], phis[11:14],
                                         6 * fr.max(), sr))
            tones += sg.db(cond["rotor_db"][i]) * (blade + sg.db(cond["whine_db"]) * whine)
            chop += np.cos(rotor * blades + phis[14])
        gain = (sg.lowpass(f, cond["wash_fc"], 1) * sg.highpass(f, 60.0)
                + sg.db(cond["frame_db"]) * sg.resonance(f, cond["frame_fc"], 6.0))
        wash = sg.noise(rng, n, gain) * (1 + cond["chop"] * chop / self.n_rotors)
        return 0.5 * tones + sg.db(cond["wash_db"]) * wash

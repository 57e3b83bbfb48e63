"""BlowerDustCollector: a centrifugal blower of a dust collector with pulse-jet filter
cleaning (2026 evaluation set)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.machines.base import FaultStyle, Machine


class BlowerDustCollector(Machine):
    """Dust collector: a two-pole induction motor on a variable-frequency drive turns a
    12-blade centrifugal impeller (blade-pass tone and 6 harmonics at 12x the shaft
    rate, 2 % slip). Broadband flow noise dominates; the duct's standing waves comb it
    (round trip of a 2.5-3.5 m duct, or 5-7 m on the target installation). Motor hum at
    twice the supply frequency. Pulse-jet cleaning: when on, a burst of compressed air
    (120-180 ms of high-passed hiss, about 5 dB above the running sound, with a valve pop)
    every 2.5-4 s, so normal clips carry loud transients too.

    Attributes are hidden (``noAttribute``): the source conditions are the drive at
    40 Hz with cleaning on and at 50 Hz with it off and on; the hidden target condition
    is the drive at 60 Hz on a longer duct, cleaning on.
    """

    name = "BlowerDustCollector"
    hidden = True
    drift = 0.002
    fault = FaultStyle(transient_hz=(1500, 6000), transient_db=(5.0, 11.0),
                       narrow_hz=(1000, 5000), narrow_db=(-3.0, 3.0))
    blades = 12

    def combos(self, domain):
        if domain == "source":
            return [{"vfd": "40", "pulse": "on"}, {"vfd": "50", "pulse": "off"},
                    {"vfd": "50", "pulse": "on"}]
        return [{"vfd": "60", "pulse": "on", "duct": "long"}]

    def condition(self, rng, combo, domain):
        supply = float(combo["vfd"])
        duct = rng.uniform(5.0, 7.0) if combo.get("duct") == "long" else rng.uniform(2.5, 3.5)
        period = rng.uniform(2.5, 4.0)
        k = np.arange(1, 8)
        return {
            "fr": supply * 0.98 * (1 + rng.uniform(-0.005, 0.005)),
            "supply": supply,
            "bpf_amps": k ** -1.5 * 10 ** (rng.normal(0, 2.0, k.size) / 20),
            "bpf_db": rng.normal(-9.0 + 0.1 * (supply - 50), 1.5),
            "shaft_db": rng.normal(-20.0, 2.0),
            "flow_fc": rng.uniform(600, 900) * supply / 50,
            "flow_tilt": rng.normal(-1.0, 0.4),
            "duct_delay": 2 * duct / 343.0,
            "duct_refl": rng.uniform(0.3, 0.5),
            "hum_db": rng.normal(-18.0, 2.0),
            "pulse": combo["pulse"] == "on",
            "period": period,
            "t0": rng.uniform(0.0, period),
            "pulse_db": rng.normal(5.0, 1.0),
            "phis": rng.uniform(0, 2 * np.pi, 14),
        }

    def render(self, rng, cond, n, sr, speed):
        f = sg.freqs(n, sr)
        fr = cond["fr"] * speed
        shaft = sg.phase(fr, sr, cond["phis"][0])
        bpf = sg.unit(sg.harmonics(shaft * self.blades, cond["bpf_amps"], cond["phis"][1:8],
                                   self.blades * fr.max(), sr))
        comb = np.abs(1 + cond["duct_refl"] * np.exp(-2j * np.pi * f * cond["duct_delay"]))
        gain = (sg.lowpass(f, cond["flow_fc"], 1) * sg.tilt(f, cond["flow_tilt"])
                * sg.highpass(f, 30.0) * comb)
        flow = sg.noise(rng, n, gain)
        hum_f = np.full(n, 2.0 * cond["supply"])
        hum = sg.unit(sg.harmonics(sg.phase(hum_f, sr, cond["phis"][8]), [1.0, 0.4, 0.2],
                                   cond["phis"][9:12], 2.0 * cond["supply"], sr))
        x = (flow + sg.db(cond["bpf_db"]) * bpf + sg.db(cond["hum_db"]) * hum
             + sg.db(cond["shaft_db"]) * sg.unit(np.sin(shaft + cond["phis"][12])))
        if cond["pulse"]:
            level = sg.rms(x)
            for start in np.arange(cond["t0"], n / sr, cond["period"]):
                m = int(rng.uniform(0.12, 0.18) * sr)
                t = np.arange(m) / sr
                env = np.minimum(1.0, t / 0.005) * np.exp(-t / (m / sr / 3.0))
                fm = sg.freqs(m, sr)
                jet = sg.noise(rng, m, sg.highpass(fm, 1000.0) * sg.lowpass(fm, 7000.0, 2)) * env
                pop = sg.impact(rng, sr, 0.03, 200.0, 800.0)
                burst = jet + 0.5 * np.pad(pop, (0, max(0, m - pop.size)))[:m]
                sg.add_at(x, sg.db(cond["pulse_db"] + rng.normal(0, 1.0)) * level
                          * burst / sg.rms(burst[: m // 3]), int(start * sr))
        return x

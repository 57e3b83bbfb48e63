"""Deterministic synthetic machine-sound dataset in the DCASE 2026 Task 2 development layout.

The real development data cannot be downloaded here, so every command runs by default on
this generator's output. It writes, for the seven 2026 development machine types
(``raw`` = ``<root>/dev_data/raw``)::

    raw/<machine>/train/section_00_{source|target}_train_normal_<iiii>_<attr>.wav
    raw/<machine>/test/section_00_{source|target}_test_{normal|anomaly}_<iiii>_<attr>.wav
    raw/<machine>/attributes_00.csv        (file_name,d1p,d1v,d2p,d2v,d3p,d3v)
    raw/<machine>/ground_truth_kinds.csv   (name,kind for every test clip)
    <root>/synth_info.json                 (generator version, seed, preset, machines done)

Indices run from 0000 within each (split, domain, label) cell, as in the official names.
Clips are 16-bit PCM stereo at 16 kHz: channel 0 the near-field microphone, channel 1 a
far-field microphone (attenuated, low-passed, reverberant, plus non-stationary background
noise at a per-clip SNR of 0-15 dB).

Every clip is rendered from its own random stream, seeded from
``(seed, machine, split, domain, label, index)`` through
``numpy.random.SeedSequence`` (machine names enter as a SHA-256 digest, never Python's
salted ``hash``), so any clip can be regenerated alone and the bytes do not depend on the
order or the number of clips generated. Files are written to a hidden temporary name and
moved into place with ``os.replace``; an interrupted run leaves no partial ``.wav`` and a
re-run only renders what is missing.

Test anomalies come in three kinds (``KINDS``), listed per clip in
``ground_truth_kinds.csv``: ``transient`` (1-3 impacts of 20-150 ms), ``narrowband`` (a
sustained fault tone or narrow resonance) and ``broad`` (spectral tilt, extra broadband
noise, or speed irregularity). docs/SYNTHETIC_DATA.md describes the sound models.

Nothing runs on import; ``generate_dataset`` / ``ensure_dataset`` are the entry points.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asdlib import atomic, locking

#: Bump when the rendered audio changes: a folder made by another version is regenerated.
#: (1 was an in-progress draft of this generator.)
GENERATOR_VERSION = 2
#: Fixed salt of every clip seed. Never change it: that would re-draw every clip.
_SEED_STREAM = 1

MACHINES: tuple[str, ...] = ("bearingEmu", "fan", "gearboxEmu", "sliderEmu", "ToyCar",
                             "ToyCarEmu", "valveEmu")
KINDS: tuple[str, ...] = ("transient", "narrowband", "broad")
SPLITS = ("train", "test")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
HIDDEN_ATTRIBUTE = "noAttribute"
INFO_FILE = "synth_info.json"
KINDS_FILE = "ground_truth_kinds.csv"
LOCK_FILE = ".synth.lock"
ATTRIBUTES_FILE = "attributes_00.csv"
_ATTR_COLUMNS = ("d1p", "d1v", "d2p", "d2v", "d3p", "d3v")
_WAV_HEADER_BYTES = 44


class SynthError(RuntimeError):
    """The synthetic dataset folder cannot be used as asked (e.g. made with other settings)."""


@dataclass(frozen=True)
class Preset:
    """Size of a synthetic dataset, per machine type.

    n_source_train / n_target_train: normal training clips per domain;
    n_test_per_cell: test clips in each of the four (domain, label) cells;
    seconds: clip length; sample_rate: Hz.
    """

    n_source_train: int
    n_target_train: int
    n_test_per_cell: int
    seconds: float
    sample_rate: int = 16000

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def clips_per_machine(self) -> int:
        return self.n_source_train + self.n_target_train + 4 * self.n_test_per_cell

    @property
    def bytes_per_clip(self) -> int:
        return _WAV_HEADER_BYTES + 4 * self.n_samples


PRESETS: dict[str, Preset] = {
    # unit tests and the CI pipeline: seconds to generate, seconds to process
    "tiny": Preset(n_source_train=12, n_target_train=4, n_test_per_cell=4, seconds=2.0),
    # the default run: AUCs mean something, the CPU pipeline fits in minutes
    "demo": Preset(n_source_train=100, n_target_train=10, n_test_per_cell=24, seconds=6.0),
    # the size of the official development set
    "dcase": Preset(n_source_train=990, n_target_train=10, n_test_per_cell=50, seconds=10.0),
}


@dataclass(frozen=True)
class Variant:
    """A generator setting for held-out data: how faults and recordings differ from the
    default every choice of the project was tuned on (the default leaves every draw as it
    was, so the embedded dataset does not change).

    transient_seconds: duration range of each impact; transient_db_shift: added to every
    machine's impact level range; narrow_hz_scale: multiplies every machine's fault-tone
    range (other tone frequencies); narrow_db_shift: added to the fault-tone level range;
    far_snr_db: range of the far-field SNR; speed_scale: multiplies every machine's running
    speed (a machine model's parameters moved, in training and test clips alike).
    """

    name: str
    transient_seconds: tuple[float, float] = (0.02, 0.15)
    transient_db_shift: float = 0.0
    narrow_hz_scale: float = 1.0
    narrow_db_shift: float = 0.0
    far_snr_db: tuple[float, float] = (0.0, 15.0)
    speed_scale: float = 1.0


#: Generator variants. "default" is the embedded data; "shifted" is a held-out fault setting
#: that no choice was made on: shorter and 3 dB weaker impacts, fault tones 25 % lower and
#: 1 dB weaker, a far-field SNR 5 dB lower, every machine running 8 % faster.
VARIANTS: dict[str, Variant] = {
    "default": Variant("default"),
    "shifted": Variant("shifted", transient_seconds=(0.01, 0.06), transient_db_shift=-3.0,
                       narrow_hz_scale=0.75, narrow_db_shift=-1.0, far_snr_db=(-5.0, 10.0),
                       speed_scale=1.08),
}


def resolve_variant(variant: str | Variant) -> Variant:
    """A Variant from its name (``VARIANTS``) or itself."""
    if isinstance(variant, Variant):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; variants: {sorted(VARIANTS)}") from None


def resolve_preset(preset: str | Preset) -> Preset:
    """A Preset from its name (``PRESETS``) or itself."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}") from None


# =========================================================================== signal helpers

def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT sizes that pocketfft handles quickly)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p2 = p35
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p35 *= 3
        p5 *= 5
    return best


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / _rms(x)


def _db(v: float) -> float:
    return 10.0 ** (v / 20.0)


def _freqs(n: int, sr: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / sr)


def _noise(rng: np.random.Generator, n: int, gain: np.ndarray | None = None) -> np.ndarray:
    """Unit-RMS Gaussian noise with magnitude response ``gain`` (on the rfft grid of n)."""
    m = n // 2 + 1
    spec = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    if gain is not None:
        spec *= gain
    spec[0] = 0.0
    return _unit(np.fft.irfft(spec, n))


def _slow(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """Smooth zero-mean random curve (about unit std) with features at ``rate_hz``."""
    k = max(2, int(np.ceil(n / sr * rate_hz)) + 2)
    knots = rng.standard_normal(k)
    m = max(2, n // 32 + 2)  # smoothstep on a coarse grid, linear in between
    pos = np.linspace(0.0, k - 1.0, m)
    i = np.minimum(pos.astype(np.int64), k - 2)
    w = pos - i
    w = w * w * (3.0 - 2.0 * w)
    coarse = knots[i] * (1.0 - w) + knots[i + 1] * w
    return np.interp(np.linspace(0.0, m - 1.0, n), np.arange(m), coarse)


def _resonance(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    """Magnitude of a second-order band-pass (peak 1 at fc)."""
    ff = np.maximum(f, 1.0)
    return 1.0 / np.sqrt(1.0 + (q * (ff / fc - fc / ff)) ** 2)


def _tilt(f: np.ndarray, db_per_octave: float, pivot: float = 1000.0) -> np.ndarray:
    return 10.0 ** (db_per_octave * np.log2(np.maximum(f, 20.0) / pivot) / 20.0)


def _lowpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _highpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def _phase(freq_hz: np.ndarray, sr: int, phi0: float = 0.0) -> np.ndarray:
    """Running phase (radians) of an instantaneous frequency track (N,)."""
    return phi0 + (2.0 * np.pi / sr) * np.cumsum(freq_hz)


def _harmonics(phase: np.ndarray, amps, phis, f0_max: float, sr: int,
               table_size: int = 4096) -> np.ndarray:
    """sum_k amps[k-1] * sin(k * phase + phis[k-1]) for a running phase (N,) in radians;
    harmonics above 0.45 sr (at fundamental ``f0_max``) are dropped.

    The sum is a periodic function of the phase: it is tabulated over one period
    (``table_size`` points, by an inverse FFT) and read with linear interpolation, so the
    cost does not grow with the number of harmonics (error ~1e-4 for k <= 30)."""
    k_max = min(len(amps), int(0.45 * sr / max(f0_max, 1e-6)), table_size // 8)
    if k_max < 1:
        return np.zeros(phase.shape[0])
    spec = np.zeros(table_size // 2 + 1, dtype=complex)
    spec[1:k_max + 1] = (np.asarray(amps[:k_max], dtype=float)
                         * np.exp(1j * (np.asarray(phis[:k_max], dtype=float) - np.pi / 2)))
    table = np.fft.irfft(spec, table_size) * (table_size / 2.0)
    table = np.append(table, table[0])
    pos = np.mod(phase, 2 * np.pi) * (table_size / (2 * np.pi))
    i = np.minimum(pos.astype(np.int64), table_size - 1)
    lo = table[i]
    return lo + (pos - i) * (table[i + 1] - lo)


def _impact(rng: np.random.Generator, sr: int, seconds: float, f_lo: float, f_hi: float,
            n_modes: int = 3, noise_part: float = 0.4) -> np.ndarray:
    """A struck-structure burst of ``seconds``: damped modes in [f_lo, f_hi] plus a click;
    peak normalised to 1, decays to about -40 dB at the end."""
    n = max(8, int(seconds * sr))
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(n_modes):
        f = rng.uniform(f_lo, f_hi)
        tau = seconds / rng.uniform(4.0, 7.0)
        out += rng.uniform(0.4, 1.0) * np.exp(-t / tau) * np.sin(2 * np.pi * f * t
                                                                 + rng.uniform(0, 2 * np.pi))
    click = rng.standard_normal(n) * np.exp(-t / (seconds / 12.0))
    out = out / (np.max(np.abs(out)) + 1e-12) + noise_part * click / (np.max(np.abs(click)) + 1e-12)
    attack = min(n, max(2, int(0.001 * sr)))
    out[:attack] *= np.linspace(0.0, 1.0, attack)
    return out / (np.max(np.abs(out)) + 1e-12)


def _add_at(x: np.ndarray, burst: np.ndarray, start: int) -> None:
    end = min(x.shape[0], start + burst.shape[0])
    if end > start:
        x[start:end] += burst[: end - start]


# =========================================================================== fault style

@dataclass(frozen=True)
class FaultStyle:
    """How the three anomaly kinds sound on one machine (ranges are drawn per clip).

    transient_hz: band of the impact modes; transient_db: impact peak re the clip RMS;
    narrow_hz: fault-tone frequency range; narrow_db: fault power re the normal sound's
    power in the third-octave band around the tone; tilt_db: |spectral tilt| in dB/octave
    re 1 kHz; noise_db: added broadband noise re the clip RMS; wobble: relative speed
    modulation depth; broad_types: which broad subtypes this machine uses.
    """

    transient_hz: tuple[float, float]
    transient_db: tuple[float, float]
    narrow_hz: tuple[float, float]
    narrow_db: tuple[float, float]
    tilt_db: tuple[float, float] = (1.2, 2.2)
    noise_db: tuple[float, float] = (-14.0, -9.0)
    wobble: tuple[float, float] = (0.015, 0.035)
    broad_types: tuple[str, ...] = ("tilt", "noise", "speed")


# =========================================================================== machines

class _Machine:
    """One machine type: attribute combinations per domain, a per-clip operating condition,
    the near-field sound model and its fault style."""

    name = ""
    hidden = False  # attribute values hidden in names ("noAttribute")
    drift = 0.004  # relative slow speed drift of normal operation
    fault: FaultStyle

    def combos(self, domain: str) -> list[dict[str, str]]:
        raise NotImplementedError

    def condition(self, rng: np.random.Generator, combo: dict[str, str], domain: str) -> dict:
        raise NotImplementedError

    def render(self, rng: np.random.Generator, cond: dict, n: int, sr: int,
               speed: np.ndarray) -> np.ndarray:
        """Near-field machine sound (N,), arbitrary scale; ``speed`` multiplies all rates."""
        raise NotImplementedError

    def activity(self, cond: dict, n: int, sr: int, speed: np.ndarray) -> np.ndarray | None:
        """Envelope (N,) in [0, 1] gating a narrowband fault (None = always on)."""
        return None


def _grid(**values) -> list[dict[str, str]]:
    """All combinations of attribute values, first key varying slowest."""
    combos = [{}]
    for key, vals in values.items():
        combos = [dict(c, **{key: str(v)}) for c in combos for v in vals]
    return combos


class _Bearing(_Machine):
    """Rotating shaft on rolling bearings: shaft harmonics, faint ball-pass modulation of
    structural resonances excited by rolling noise, motor hum, broadband floor."""

    name = "bearingEmu"
    fault = FaultStyle(transient_hz=(1500, 6000), transient_db=(5.0, 11.0),
                       narrow_hz=(900, 5500), narrow_db=(-1.0, 5.0))

    def combos(self, domain):
        if domain == "source":
            return _grid(vel=(6, 8, 10), loc=("A", "B"))
        return _grid(vel=(14, 16), loc=("A", "B"))

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
            "shaft_amps": _db(-4.0) ** np.arange(8) * 10 ** (rng.normal(0, 2.0, 8) / 20),
            "phis": rng.uniform(0, 2 * np.pi, 16),
        }

    def render(self, rng, cond, n, sr, speed):
        f = _freqs(n, sr)
        fr = cond["fr"] * speed
        shaft_phase = _phase(fr, sr, cond["phis"][0])
        shaft = _unit(_harmonics(shaft_phase, cond["shaft_amps"], cond["phis"][1:9],
                                 fr.max(), sr))
        gain = sum(_db(g) * _resonance(f, fc, q)
                   for fc, q, g in zip(cond["res"], cond["res_q"], cond["res_db"]))
        rolling = _noise(rng, n, gain)
        bpfo = 3.05 * fr
        bpfi = 4.95 * fr
        mod = (1.0 + cond["am"] * np.sin(_phase(bpfo, sr, cond["phis"][9]))
               + 0.5 * cond["am"] * np.sin(_phase(bpfi, sr, cond["phis"][10])))
        rolling = rolling * mod
        hum = _unit(_harmonics(_phase(np.full(n, 100.0), sr, cond["phis"][11]),
                               [1.0, 0.5, 0.25], cond["phis"][12:15], 100.0, sr))
        floor = _noise(rng, n, _tilt(f, cond["floor_tilt"]) * _highpass(f, 40.0))
        return (rolling + _db(cond["shaft_db"]) * shaft + _db(cond["hum_db"]) * hum
                + _db(cond["floor_db"]) * floor)


class _Fan(_Machine):
    """Axial fan: blade-pass harmonics, faint shaft-rate imbalance, broadband airflow noise
    with slow turbulence fluctuation. Domain shift: another fan model (7 instead of 5
    blades)."""

    name = "fan"
    fault = FaultStyle(transient_hz=(800, 4500), transient_db=(4.0, 10.0),
                       narrow_hz=(1200, 6000), narrow_db=(-4.0, 2.0))

    def combos(self, domain):
        if domain == "source":
            return _grid(bld=(5,), spd=(1, 2, 3))
        return _grid(bld=(7,), spd=(1, 2))

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
        f = _freqs(n, sr)
        fr = cond["fr"] * speed
        bpf = cond["blades"] * fr
        tones = _unit(_harmonics(_phase(bpf, sr, cond["phis"][0]), cond["bpf_amps"],
                                 cond["phis"][1:13], bpf.max(), sr))
        imb = np.sin(_phase(fr, sr, cond["phis"][13]))
        air_gain = (_lowpass(f, cond["air_fc"], 1) * _tilt(f, cond["air_tilt"])
                    + _db(cond["hump_db"]) * _resonance(f, cond["hump_fc"], 2.0))
        air = _noise(rng, n, air_gain * _highpass(f, 30.0))
        air = air * (1.0 + cond["turb"] * _slow(rng, n, sr, 2.0))
        return air + _db(cond["bpf_db"]) * tones + _db(cond["imb_db"]) * _unit(imb)


class _Gearbox(_Machine):
    """Gearbox driven by a DC motor: gear-mesh harmonics amplitude-modulated at the shaft
    rate (sidebands), load-dependent mesh level, housing resonances, motor noise."""

    name = "gearboxEmu"
    teeth = 23
    fault = FaultStyle(transient_hz=(1000, 5000), transient_db=(5.0, 11.0),
                       narrow_hz=(600, 4500), narrow_db=(0.0, 6.0))

    def combos(self, domain):
        if domain == "source":
            return _grid(volt=("1.0", "1.3", "1.6"), wt=(0, 30))
        return _grid(volt=("2.0", "2.3"), wt=(60,))

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
        f = _freqs(n, sr)
        fs = cond["fs"] * speed
        fm = self.teeth * fs
        shaft_phase = _phase(fs, sr, cond["phis"][0])
        mesh = _unit(_harmonics(_phase(fm, sr, cond["phis"][1]), cond["mesh_amps"],
                                cond["phis"][2:8], fm.max(), sr))
        mesh = mesh * (1.0 + cond["sb1"] * np.cos(shaft_phase)
                       + cond["sb2"] * np.cos(2 * shaft_phase + cond["phis"][8]))
        gain = (_tilt(f, cond["floor_tilt"]) * _highpass(f, 40.0)
                + sum(_db(g) * _resonance(f, fc, 8.0)
                      for fc, g in zip(cond["res"], cond["res_db"])))
        floor = _noise(rng, n, gain)
        motor = _unit(_harmonics(shaft_phase * 6, [1.0, 0.5, 0.3], cond["phis"][9:12],
                                 6 * fs.max(), sr))
        return (_db(cond["mesh_db"]) * mesh + _db(cond["floor_db"]) * floor
                + _db(cond["motor_db"]) * motor)


class _Slider(_Machine):
    """Linear slide on a ball screw: back-and-forth strokes with trapezoidal velocity;
    servo whine and friction noise follow the velocity, end stops thump, idle between."""

    name = "sliderEmu"
    drift = 0.002
    fault = FaultStyle(transient_hz=(500, 3500), transient_db=(3.0, 8.0),
                       narrow_hz=(1800, 4500), narrow_db=(-2.0, 4.0))
    stroke_m = 0.25

    def combos(self, domain):
        if domain == "source":
            return _grid(vel=(300, 400, 500), ac=(1, 2))
        return _grid(vel=(700,), ac=(3, 4))

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
        f = _freqs(n, sr)
        vel, stops = self._velocity(cond, n, sr, speed)
        rel = vel / cond["v"]
        motor_hz = 900.0 * vel / 0.4 + 1e-3
        whine = _harmonics(_phase(motor_hz, sr, cond["phis"][0]), cond["whine_amps"],
                           cond["phis"][1:5], float(motor_hz.max()), sr)
        whine = whine * np.sqrt(rel)
        fric = _noise(rng, n, _resonance(f, cond["fric_fc"], 0.8) * _highpass(f, 300.0))
        fric = fric * rel
        screw = _noise(rng, n, _lowpass(f, 250.0, 2) * _highpass(f, 30.0))
        screw = screw * rel * (1 + 0.4 * np.sin(_phase(vel / 0.01, sr, cond["phis"][5])))
        x = (_db(cond["whine_db"]) * whine / 0.7 + _db(cond["fric_db"]) * fric
             + _db(cond["fric_db"] - 6.0) * screw)
        level = _rms(x)
        idle = _noise(rng, n, _tilt(f, -3.0) * _highpass(f, 40.0))
        x = x + _db(cond["idle_db"]) * level * idle
        for s in stops:
            thump = _impact(rng, sr, rng.uniform(0.03, 0.06), 90.0, 400.0, noise_part=0.2)
            _add_at(x, _db(cond["thump_db"] + rng.normal(0, 1.0)) * level * thump, int(s))
        return x


class _ToyCar(_Machine):
    """Toy car on a track: DC-motor whine (commutator harmonics), pinion gear mesh with
    sidebands, wheel/road rumble modulated by wheel rotation; the microphone position
    adds a reflection comb. Domain shift: another car at other speeds, other mic."""

    name = "ToyCar"
    fault = FaultStyle(transient_hz=(1000, 6000), transient_db=(2.0, 8.0),
                       narrow_hz=(2500, 6500), narrow_db=(1.0, 7.0))
    motor_hz = {1: 110.0, 2: 140.0, 3: 170.0, 4: 200.0}

    def combos(self, domain):
        if domain == "source":
            return _grid(car=("A1", "A2"), spd=(1, 2, 3), mic=(1,))
        return _grid(car=("B1",), spd=(2, 4), mic=(2,))

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
        road = _noise(rng, n, _lowpass(f, cond["road_fc"], 2) * _highpass(f, 25.0))
        return road * (1 + 0.3 * np.sin(_phase(fw, sr, cond["phis"][39])))

    def render(self, rng, cond, n, sr, speed):
        f = _freqs(n, sr)
        fm = cond["fm"] * speed
        ph = _phase(fm, sr, cond["phis"][0])
        motor = _unit(_harmonics(ph, cond["motor_amps"], cond["phis"][1:25], fm.max(), sr))
        fw = fm / cond["ratio"]
        gear = _harmonics(ph * cond["pinion"], [1.0, 0.4], cond["phis"][25:27],
                          cond["pinion"] * fm.max(), sr)
        gear = _unit(gear * (1 + 0.3 * np.cos(_phase(fw, sr, cond["phis"][27]))))
        road = self._road(rng, cond, n, sr, fw, f)
        hiss = _noise(rng, n, _tilt(f, -2.0) * _highpass(f, 500.0))
        x = motor + _db(cond["gear_db"]) * gear + _db(cond["road_db"]) * road + _db(-18.0) * hiss
        comb = np.abs(1 + cond["mic_refl"] * np.exp(-2j * np.pi * f * cond["mic_delay"]))
        return np.fft.irfft(np.fft.rfft(x) * comb, n)


class _ToyCarEmu(_ToyCar):
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
        road = _noise(rng, n, _lowpass(f, cond["road_fc"], 2) * _highpass(f, 25.0))
        return road * (1 + 0.4 * np.sin(_phase(fw, sr, cond["phis"][39])))

    def render(self, rng, cond, n, sr, speed):
        x = super().render(rng, cond, n, sr, speed)
        level = _rms(x)
        t = np.arange(n) / sr
        pwm = np.sin(2 * np.pi * cond["pwm_hz"] * t + cond["phis"][30])
        x = x + _db(cond["pwm_db"]) * level * np.sqrt(2) * pwm
        # roller joint: one faint clack per roller turn (about 2.5 turns per second)
        turn = 0.4 * (1 + 0.02 * rng.standard_normal())
        first = rng.uniform(0, turn)
        for start in np.arange(first, n / sr, turn):
            clack = _impact(rng, sr, 0.02, 600.0, 2500.0, n_modes=2)
            _add_at(x, _db(cond["clack_db"]) * level * clack, int(start * sr))
        return x


class _Valve(_Machine):
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
            return _grid(pat=("00", "01", "02"), flow=(2, 3))
        return _grid(pat=("03", "04"), flow=(5,))

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
        f = _freqs(n, sr)
        is_open = self._open(cond, n, sr, speed)
        ramp = max(1, int(0.02 * sr))
        env = np.convolve(is_open.astype(float), np.ones(ramp) / ramp, mode="same")
        hiss = _noise(rng, n, _resonance(f, cond["hiss_fc"], 1.2) * _highpass(f, 1000.0))
        buzz = _harmonics(_phase(np.full(n, 100.0), sr, cond["phis"][0]), [1.0, 0.6, 0.4, 0.2],
                          cond["phis"][1:5], 100.0, sr)
        pump_f = cond["pump_fr"] * speed
        pump = _unit(_harmonics(_phase(pump_f, sr, cond["phis"][5]), [1.0, 0.7, 0.5, 0.3, 0.2],
                                cond["phis"][6:11], pump_f.max(), sr))
        pump = pump + 0.5 * _noise(rng, n, _lowpass(f, 300.0, 2) * _highpass(f, 20.0))
        line = _noise(rng, n, _tilt(f, cond["line_tilt"]) * _highpass(f, 200.0))
        x = (_db(cond["pump_db"]) * pump + _db(cond["line_db"]) * line
             + _db(cond["hiss_db"]) * hiss * env
             + _db(cond["buzz_db"]) * _unit(buzz) * env)
        level = _rms(x)
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
            gain = _db(cond["click_db"] + (0.0 if opening else 2.0) + rng.normal(0, 1.0))
            _add_at(x, gain * level * burst, int(e) + int(rng.integers(0, int(0.003 * sr))))
        return x


_MACHINE_MODELS: dict[str, _Machine] = {m.name: m for m in (
    _Bearing(), _Fan(), _Gearbox(), _Slider(), _ToyCar(), _ToyCarEmu(), _Valve())}


# =========================================================================== background / far

def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS non-stationary factory background (N,): mains hum with drifting level,
    babble-like talkers with syllabic envelopes, ambient noise with slow level swings, and
    occasionally distant clatter."""
    f = _freqs(n, sr)
    t_hum = _harmonics(_phase(np.full(n, 50.0), sr, rng.uniform(0, 6.3)),
                       _db(-4.0) ** np.arange(8) * 10 ** (rng.normal(0, 3, 8) / 20),
                       rng.uniform(0, 6.3, 8), 50.0, sr)
    hum = _unit(t_hum) * np.exp(0.25 * _slow(rng, n, sr, 0.3))
    speech = _resonance(f, 500.0, 0.7) * _lowpass(f, 3000.0, 2) * _highpass(f, 150.0, 2)
    voice = _noise(rng, n, speech)
    babble = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):  # talkers: far-apart shifts of one noise
        env = np.exp(1.3 * _slow(rng, n, sr, rng.uniform(3.0, 6.0)))
        babble += _db(rng.uniform(-6, 0)) * np.roll(voice, int(rng.integers(n))) * env
    babble = _unit(babble)
    ambient = _noise(rng, n, _tilt(f, -3.0) * _highpass(f, 30.0))
    ambient = ambient * np.exp(0.35 * _slow(rng, n, sr, 0.25))
    bg = (_db(rng.uniform(-12, -3)) * hum + _db(rng.uniform(-8, 0)) * babble + ambient)
    level = _rms(bg)
    for _ in range(int(rng.poisson(1.0))):
        clatter = _impact(rng, sr, rng.uniform(0.05, 0.25), 400.0, 3500.0)
        _add_at(bg, _db(rng.uniform(0, 8)) * level * clatter, int(rng.integers(0, n)))
    return _unit(bg)


def _far_field(rng: np.random.Generator, near: np.ndarray, sr: int) -> np.ndarray:
    """Machine sound at the far microphone: low-passed, reverberant, attenuated (N,)."""
    n = near.shape[0]
    rt60 = rng.uniform(0.25, 0.7)
    ir_len = int(rt60 * sr)
    t = np.arange(ir_len) / sr
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    drr_db = rng.uniform(-2.0, 6.0)  # direct-to-reverberant ratio
    ir *= np.sqrt(1.0 / (np.sum(ir ** 2) * _db(drr_db) ** 2))
    delay = int(rng.integers(int(0.003 * sr), int(0.012 * sr)))
    ir = np.concatenate([np.zeros(delay), [1.0], ir])
    nfft = _fast_len(n + ir.size)
    f = _freqs(nfft, sr)
    spec = np.fft.rfft(near, nfft) * np.fft.rfft(ir, nfft) * _lowpass(f, rng.uniform(2500, 5000), 2)
    return np.fft.irfft(spec, nfft)[:n] * rng.uniform(0.3, 0.6)


# =========================================================================== clip plan

@dataclass(frozen=True)
class ClipSpec:
    """One clip of the plan: where it goes and what it is (no audio)."""

    machine: str
    split: str
    domain: str
    label: str
    index: int
    condition: tuple[tuple[str, str], ...]  # attribute key/value pairs (hidden ones too)
    kind: str  # "normal" or one of KINDS

    @property
    def attributes(self) -> str:
        if _MACHINE_MODELS[self.machine].hidden:
            return HIDDEN_ATTRIBUTE
        return "_".join(f"{k}_{v}" for k, v in self.condition)

    @property
    def name(self) -> str:
        return (f"section_00_{self.domain}_{self.split}_{self.label}_{self.index:04d}_"
                f"{self.attributes}.wav")

    @property
    def relpath(self) -> str:
        """Path under ``<root>/dev_data/raw``."""
        return f"{self.machine}/{self.split}/{self.name}"


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def clip_seed(seed: int, spec: ClipSpec) -> np.random.SeedSequence:
    """The clip's own seed: depends only on (seed, machine, split, domain, label, index)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence([int(seed), _stable_int(spec.machine), SPLITS.index(spec.split),
                                   DOMAINS.index(spec.domain), LABELS.index(spec.label),
                                   int(spec.index), _SEED_STREAM])


def clip_plan(preset: str | Preset = "demo", machines=None) -> list[ClipSpec]:
    """Every clip of a dataset, in a fixed order (machine, split, domain, label, index).

    Attribute combinations rotate with the index (train: index mod #combos; test:
    (index // 3) mod #combos, so that each combination sees every anomaly kind); the kind
    of a test anomaly is ``KINDS[(index + (domain == "target")) % 3]``.
    """
    p = resolve_preset(preset)
    machines = _check_machines(machines)
    plan = []
    for machine in machines:
        model = _MACHINE_MODELS[machine]
        for split in SPLITS:
            for domain in DOMAINS:
                combos = model.combos(domain)
                labels = ("normal",) if split == "train" else LABELS
                for label in labels:
                    if split == "train":
                        count = p.n_source_train if domain == "source" else p.n_target_train
                    else:
                        count = p.n_test_per_cell
                    for i in range(count):
                        combo = combos[(i if split == "train" else i // 3) % len(combos)]
                        kind = ("normal" if label == "normal"
                                else KINDS[(i + (domain == "target")) % len(KINDS)])
                        plan.append(ClipSpec(machine, split, domain, label, i,
                                             tuple(combo.items()), kind))
    return plan


def _check_machines(machines) -> list[str]:
    if machines is None:
        return list(MACHINES)
    if isinstance(machines, str):
        machines = [machines]
    unknown = [m for m in machines if m not in _MACHINE_MODELS]
    if unknown:
        raise ValueError(f"unknown machine(s) {unknown}; synthetic machines: {list(MACHINES)}")
    return [m for m in MACHINES if m in set(machines)]


# =========================================================================== rendering

@dataclass
class ClipAudio:
    """A rendered clip before quantisation; all arrays (N,) float64.

    near = near_machine + near_noise; far = far_machine + far_noise; ``info`` holds the
    drawn channel settings and fault parameters.
    """

    near_machine: np.ndarray
    near_noise: np.ndarray
    far_machine: np.ndarray
    far_noise: np.ndarray
    info: dict

    @property
    def near(self) -> np.ndarray:
        return self.near_machine + self.near_noise

    @property
    def far(self) -> np.ndarray:
        return self.far_machine + self.far_noise


def _band_power_fraction(x: np.ndarray, sr: int, f0: float, half_octaves: float = 1 / 6) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = _freqs(x.shape[0], sr)
    band = (f >= f0 * 2 ** -half_octaves) & (f <= f0 * 2 ** half_octaves)
    return float(spec[band].sum() / (spec[1:].sum() + 1e-20))


def render_clip(spec: ClipSpec, preset: str | Preset = "demo", seed: int = 0,
                variant: str | Variant = "default") -> ClipAudio:
    """Render one clip (deterministic in (seed, spec), the preset's length / rate and the
    variant)."""
    p = resolve_preset(preset)
    v = resolve_variant(variant)
    n, sr = p.n_samples, p.sample_rate
    model = _MACHINE_MODELS[spec.machine]
    rng = np.random.default_rng(clip_seed(seed, spec))
    cond = model.condition(rng, dict(spec.condition), spec.domain)
    style = model.fault
    info: dict = {"kind": spec.kind}

    speed = 1.0 + model.drift * _slow(rng, n, sr, 0.5)
    if v.speed_scale != 1.0:
        speed = speed * v.speed_scale
    broad_type = None
    if spec.kind == "broad":
        broad_type = style.broad_types[int(rng.integers(len(style.broad_types)))]
        info["broad_type"] = broad_type
        if broad_type == "speed":
            depth = rng.uniform(*style.wobble)
            rate = rng.uniform(0.4, 2.0)
            t = np.arange(n) / sr
            wob = depth * (0.7 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
                           + 0.3 * _slow(rng, n, sr, 3.0))
            speed = speed * (1.0 + wob)
            info["wobble"] = depth

    x = model.render(rng, cond, n, sr, speed)
    ref = _rms(x)  # level of the normal sound: fault levels are relative to it

    if spec.kind == "transient":
        n_events = int(rng.integers(1, 4))
        for _ in range(n_events):
            dur = rng.uniform(*v.transient_seconds)
            burst = _impact(rng, sr, dur, *style.transient_hz)
            level = rng.uniform(*style.transient_db) + v.transient_db_shift
            _add_at(x, _db(level) * ref * burst, int(rng.integers(0, max(1, n - int(dur * sr)))))
        info["n_events"] = n_events
    elif spec.kind == "narrowband":
        f0 = rng.uniform(*style.narrow_hz) * v.narrow_hz_scale
        snr = rng.uniform(*style.narrow_db) + v.narrow_db_shift
        if rng.random() < 0.5:  # fault tone with a slight wander
            inst = f0 * (1 + 0.003 * _slow(rng, n, sr, 0.5))
            fault = np.sin(_phase(inst, sr, rng.uniform(0, 6.3)))
        else:  # narrow resonance: band-limited noise 15-60 Hz wide
            bw = rng.uniform(15, 60)
            fault = _noise(rng, n, np.exp(-0.5 * ((_freqs(n, sr) - f0) / (bw / 2.355)) ** 2))
        fault = _unit(fault) * (1 + 0.2 * _slow(rng, n, sr, 0.3))
        gate = model.activity(cond, n, sr, speed)
        if gate is not None:
            fault = fault * gate
        power = ref ** 2 * _band_power_fraction(x, sr, f0) * _db(snr) ** 2
        x = x + np.sqrt(power) * fault / (_rms(fault) if gate is None else 1.0)
        info.update(f0=f0, narrow_db=snr)
    elif broad_type == "tilt":
        slope = rng.uniform(*style.tilt_db) * (1 if rng.random() < 0.6 else -1)
        f = _freqs(n, sr)
        x = np.fft.irfft(np.fft.rfft(x) * _tilt(f, slope, 1000.0), n)
        info["tilt_db"] = slope
    elif broad_type == "noise":
        f = _freqs(n, sr)
        level = rng.uniform(*style.noise_db)
        colour = _tilt(f, rng.uniform(-3.0, 0.0)) * _highpass(f, 100.0) * _lowpass(f, 7000.0, 4)
        x = x + _db(level) * ref * _noise(rng, n, colour)
        info["noise_db"] = level

    # near-field level, sensor and (faint) room noise
    level_db = -28.0 + rng.uniform(-1.5, 1.5)
    near_machine = x * (_db(level_db) / ref)
    bg = _background(rng, n, sr)
    near_snr = rng.uniform(25.0, 35.0)
    shift = int(rng.integers(0, int(0.01 * sr)))
    near_noise = (np.roll(bg, shift) * _db(level_db - near_snr)
                  + _db(level_db - 55.0) * rng.standard_normal(n))

    far_machine = _far_field(rng, near_machine, sr)
    far_snr = rng.uniform(*v.far_snr_db)
    far_noise = (bg * _rms(far_machine) * _db(-far_snr)
                 + _db(level_db - 60.0) * rng.standard_normal(n))
    info.update(near_snr_db=near_snr, far_snr_db=far_snr, level_db=level_db)
    return ClipAudio(near_machine, near_noise, far_machine, far_noise, info)


def _pcm16(audio: ClipAudio) -> np.ndarray:
    """Interleaved int16 samples (N, 2): near, far."""
    stereo = np.stack([audio.near, audio.far], axis=1)
    return np.clip(np.round(stereo * 32767.0), -32768, 32767).astype("<i2")


def _wav_bytes(pcm: np.ndarray, sr: int) -> bytes:
    """A canonical 44-byte-header PCM WAV (bytes depend only on the samples)."""
    channels = pcm.shape[1]
    data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1,
                         channels, sr, sr * 2 * channels, 2 * channels, 16, b"data", len(data))
    return header + data


def _is_complete(path: Path, p: Preset) -> bool:
    try:
        return path.stat().st_size == p.bytes_per_clip
    except FileNotFoundError:
        return False


def _write_clip(raw_dir: Path, spec: ClipSpec, p: Preset, seed: int, variant: str) -> None:
    audio = render_clip(spec, p, seed, variant)
    atomic.write_bytes(raw_dir / spec.relpath, _wav_bytes(_pcm16(audio), p.sample_rate))


def _write_clips(args) -> int:
    raw_dir, specs, p, seed, variant = args
    for spec in specs:
        _write_clip(raw_dir, spec, p, seed, variant)
    return len(specs)


# =========================================================================== dataset

def _info(p: Preset, seed: int, variant: str = "default") -> dict:
    info = {"generator": "asdlib.synth", "generator_version": GENERATOR_VERSION,
            "seed": int(seed), "preset": asdict(p)}
    if variant != "default":  # the default's info is as before variants existed
        info["variant"] = asdict(resolve_variant(variant))
    return info


def _read_info(root: Path) -> dict | None:
    path = root / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SynthError(f"{path}: unreadable ({exc}); delete it to regenerate") from exc


def _check_info(root: Path, p: Preset, seed: int, clear_old: bool = False,
                variant: str = "default") -> dict:
    """The info to continue with: the existing one, or a fresh one for an empty folder.

    Raises SynthError when the folder holds a dataset of another seed or preset (clips of
    two datasets must never mix). A folder made by another generator version is returned
    as is, or, with ``clear_old``, emptied of the files this generator writes and started
    afresh.
    """
    existing = _read_info(root)
    wanted = _info(p, seed, variant)
    wanted["machines_complete"] = []
    if existing is None:
        return wanted
    for key in ("seed", "preset", "variant"):
        if existing.get(key) != wanted.get(key):
            raise SynthError(f"{root}: holds a synthetic dataset with {key}={existing.get(key)!r}, "
                             f"asked for {wanted.get(key)!r}; use another root or delete this one")
    if existing.get("generator_version") != GENERATOR_VERSION:
        if not clear_old:
            return existing
        if existing.get("generator") != "asdlib.synth":
            raise SynthError(f"{root / INFO_FILE}: not written by asdlib.synth; delete the "
                             "folder or use another root")
        print(f"[synth] {root}: made by generator version {existing.get('generator_version')}, "
              f"regenerating with version {GENERATOR_VERSION}", file=sys.stderr, flush=True)
        _clear_generated(root)
        return wanted
    existing.setdefault("machines_complete", [])
    return existing


def _clear_generated(root: Path) -> None:
    """Delete what this generator writes (clips, temporary files, per-machine csv files)."""
    raw_dir = root / "dev_data" / "raw"
    for machine in MACHINES:
        for split in SPLITS:
            folder = raw_dir / machine / split
            if folder.is_dir():
                for path in list(folder.glob("*.wav")) + list(folder.glob(".*.tmp")):
                    path.unlink()
        for name in (ATTRIBUTES_FILE, KINDS_FILE):
            (raw_dir / machine / name).unlink(missing_ok=True)
    (root / INFO_FILE).unlink(missing_ok=True)


def _machine_files(raw_dir: Path, machine: str, plan: list[ClipSpec]) -> None:
    """Write attributes_00.csv and ground_truth_kinds.csv of one machine."""
    specs = [s for s in plan if s.machine == machine]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("file_name",) + _ATTR_COLUMNS)
    for s in specs:
        if _MACHINE_MODELS[machine].hidden:
            values = [HIDDEN_ATTRIBUTE, ""]
        else:
            values = [v for pair in s.condition for v in pair]
        values = (values + [""] * len(_ATTR_COLUMNS))[: len(_ATTR_COLUMNS)]
        writer.writerow([f"{machine}/{s.split}/{s.name}"] + values)
    atomic.write_text(raw_dir / machine / ATTRIBUTES_FILE, out.getvalue())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("name", "kind"))
    for s in specs:
        if s.split == "test":
            writer.writerow((s.name, s.kind))
    atomic.write_text(raw_dir / machine / KINDS_FILE, out.getvalue())


def _remove_stale_tmp(folder: Path) -> None:
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def generate_dataset(root: str | os.PathLike, preset: str | Preset = "demo", seed: int = 0,
                     machines=None, progress: bool = True, workers: int | None = None,
                     variant: str = "default") -> Path:
    """Write (or complete) the synthetic dataset under ``root``; returns ``root`` as a Path.

    preset: name in ``PRESETS`` or a ``Preset``; seed: non-negative int; machines: subset of
    ``MACHINES`` (None = all seven); workers: processes rendering in parallel (the output
    does not depend on it; None = one per CPU, at most 4, when over 50 clips are missing);
    variant: a name in ``VARIANTS`` (held-out fault settings; "default" is the embedded data).
    Existing complete clips are kept (a clip's bytes depend only on its seed), stale
    temporary files of an interrupted run are removed. Raises SynthError
    when ``root`` holds a dataset made with another seed, preset or variant, and
    `asdlib.locking.LockHeld` while another process generates into ``root``
    (``.synth.lock``); a dataset of another generator version is deleted and regenerated.
    """
    root = Path(root).expanduser()
    p = resolve_preset(preset)
    resolve_variant(variant)
    names = _check_machines(machines)
    root.mkdir(parents=True, exist_ok=True)
    with locking.FolderLock(root / LOCK_FILE, f"the synthetic dataset {root}"):
        _generate(root, p, seed, names, progress, workers, variant)
    return root


def _generate(root: Path, p: Preset, seed: int, names: list[str], progress: bool,
              workers: int | None, variant: str) -> None:
    info = _check_info(root, p, seed, clear_old=True, variant=variant)
    atomic.write_text(root / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))
    raw_dir = root / "dev_data" / "raw"
    start_all = time.perf_counter()
    if workers is None:
        n_missing = len(missing_clips(root, p, names))
        workers = min(4, os.cpu_count() or 1) if n_missing > 50 else 1
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for machine in names:
            start = time.perf_counter()
            plan = clip_plan(p, [machine])
            for split in SPLITS:
                (raw_dir / machine / split).mkdir(parents=True, exist_ok=True)
                _remove_stale_tmp(raw_dir / machine / split)
            todo = [s for s in plan if not _is_complete(raw_dir / s.relpath, p)]
            if pool is None:
                for spec in todo:
                    _write_clip(raw_dir, spec, p, seed, variant)
            else:
                chunks = [todo[i::workers * 4] for i in range(workers * 4)]
                list(pool.map(_write_clips, [(raw_dir, c, p, seed, variant) for c in chunks if c]))
            _machine_files(raw_dir, machine, plan)
            if machine not in info["machines_complete"]:
                info["machines_complete"] = sorted(set(info["machines_complete"]) | {machine})
                atomic.write_text(root / INFO_FILE, json.dumps(info, indent=2, sort_keys=True))
            if progress:
                print(f"[synth] {machine}: {len(plan)} clips ({len(todo)} rendered) in "
                      f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if progress:
        print(f"[synth] {root}: done in {time.perf_counter() - start_all:.1f} s",
              file=sys.stderr, flush=True)


def missing_clips(root: str | os.PathLike, preset: str | Preset = "demo",
                  machines=None) -> list[str]:
    """Planned files (paths under ``dev_data/raw``) that are absent or of the wrong size,
    plus the per-machine csv files."""
    root = Path(root)
    p = resolve_preset(preset)
    raw_dir = root / "dev_data" / "raw"
    missing = [s.relpath for s in clip_plan(p, machines)
               if not _is_complete(raw_dir / s.relpath, p)]
    for machine in _check_machines(machines):
        for name in (ATTRIBUTES_FILE, KINDS_FILE):
            if not (raw_dir / machine / name).is_file():
                missing.append(f"{machine}/{name}")
    return missing


def ensure_dataset(root: str | os.PathLike, preset: str | Preset = "demo", seed: int = 0,
                   manifest: str | os.PathLike | None = None, machines=None,
                   progress: bool = True, workers: int | None = None, hashes=None,
                   variant: str = "default") -> Path:
    """Return ``root`` holding the complete synthetic dataset, generating what is missing.

    A complete folder made with the same (preset, seed, variant, generator version) is
    returned as is
    (a cheap size check of every planned file, no hashing). A folder made by an older
    generator version is regenerated; one made with another seed or preset raises
    SynthError.

    manifest: a manifest csv (`asdlib.data.write_manifest`) the finished files must match,
        byte for byte (sha256): `asdlib.data.ManifestMismatch` names every differing file.
        The embedded default is checked against the committed ``data_manifest.csv`` so that a
        generator change that alters the data cannot pass unseen. hashes: as in
        `asdlib.data.build_manifest` (a cache makes the check cheap to repeat).
    """
    root = _ensure(root, preset, seed, machines, progress, workers, variant)
    if manifest is not None:
        from asdlib import data

        data.verify_manifest(root, manifest, hashes=hashes)
    return root


def _ensure(root, preset, seed, machines, progress, workers, variant) -> Path:
    root = Path(root).expanduser()
    p = resolve_preset(preset)
    names = _check_machines(machines)
    info = _read_info(root) if root.is_dir() else None
    if info is not None:
        info = _check_info(root, p, seed, variant=variant)
        if info.get("generator_version") == GENERATOR_VERSION and \
                set(names) <= set(info.get("machines_complete", [])) and \
                not missing_clips(root, p, names):
            return root
    return generate_dataset(root, p, seed, names, progress=progress, workers=workers,
                            variant=variant)

"""Rendering one clip: the machine's sound model under the clip's operating condition,
the anomaly of its kind, the near-field level and noise, and the far-field channel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import asdlib.synth.signals as sg
from asdlib.synth.plan import (ClipSpec, Preset, Variant, clip_seed, model_for, resolve_preset,
                               resolve_variant)
from asdlib.synth.recording import background, far_field


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
    f = sg.freqs(x.shape[0], sr)
    band = (f >= f0 * 2 ** -half_octaves) & (f <= f0 * 2 ** half_octaves)
    return float(spec[band].sum() / (spec[1:].sum() + 1e-20))


def render_clip(spec: ClipSpec, preset: str | Preset = "demo", seed: int = 0,
                variant: str | Variant = "default") -> ClipAudio:
    """Render one clip (deterministic in (seed, spec), the preset's length / rate and the
    variant)."""
    p = resolve_preset(preset)
    v = resolve_variant(variant)
    n, sr = p.n_samples, p.sample_rate
    model = model_for(spec.machine)
    rng = np.random.default_rng(clip_seed(seed, spec))
    cond = model.condition(rng, dict(spec.condition), spec.domain)
    style = model.fault
    info: dict = {"kind": spec.kind}

    speed = 1.0 + model.drift * sg.slow(rng, n, sr, 0.5)
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
                           + 0.3 * sg.slow(rng, n, sr, 3.0))
            speed = speed * (1.0 + wob)
            info["wobble"] = depth

    x = model.render(rng, cond, n, sr, speed)
    ref = sg.rms(x)  # level of the normal sound: fault levels are relative to it

    if spec.kind == "transient":
        n_events = int(rng.integers(1, 4))
        for _ in range(n_events):
            dur = rng.uniform(*v.transient_seconds)
            burst = sg.impact(rng, sr, dur, *style.transient_hz)
            level = rng.uniform(*style.transient_db) + v.transient_db_shift
            start = int(rng.integers(0, max(1, n - int(dur * sr))))
            sg.add_at(x, sg.db(level) * ref * burst, start)
        info["n_events"] = n_events
    elif spec.kind == "narrowband":
        f0 = rng.uniform(*style.narrow_hz) * v.narrow_hz_scale
        snr = rng.uniform(*style.narrow_db) + v.narrow_db_shift
        if rng.random() < 0.5:  # fault tone with a slight wander
            inst = f0 * (1 + 0.003 * sg.slow(rng, n, sr, 0.5))
            fault = np.sin(sg.phase(inst, sr, rng.uniform(0, 6.3)))
        else:  # narrow resonance: band-limited noise 15-60 Hz wide
            bw = rng.uniform(15, 60)
            fault = sg.noise(rng, n, np.exp(-0.5 * ((sg.freqs(n, sr) - f0) / (bw / 2.355)) ** 2))
        fault = sg.unit(fault) * (1 + 0.2 * sg.slow(rng, n, sr, 0.3))
        gate = model.activity(cond, n, sr, speed)
        if gate is not None:
            fault = fault * gate
        power = ref ** 2 * _band_power_fraction(x, sr, f0) * sg.db(snr) ** 2
        x = x + np.sqrt(power) * fault / (sg.rms(fault) if gate is None else 1.0)
        info.update(f0=f0, narrow_db=snr)
    elif broad_type == "tilt":
        slope = rng.uniform(*style.tilt_db) * (1 if rng.random() < 0.6 else -1)
        f = sg.freqs(n, sr)
        x = np.fft.irfft(np.fft.rfft(x) * sg.tilt(f, slope, 1000.0), n)
        info["tilt_db"] = slope
    elif broad_type == "noise":
        f = sg.freqs(n, sr)
        level = rng.uniform(*style.noise_db)
        colour = (sg.tilt(f, rng.uniform(-3.0, 0.0)) * sg.highpass(f, 100.0)
                  * sg.lowpass(f, 7000.0, 4))
        x = x + sg.db(level) * ref * sg.noise(rng, n, colour)
        info["noise_db"] = level

    # near-field level, sensor and (faint) room noise
    level_db = -28.0 + rng.uniform(-1.5, 1.5)
    near_machine = x * (sg.db(level_db) / ref)
    bg = background(rng, n, sr)
    near_snr = rng.uniform(25.0, 35.0)
    shift = int(rng.integers(0, int(0.01 * sr)))
    near_noise = (np.roll(bg, shift) * sg.db(level_db - near_snr)
                  + sg.db(level_db - 55.0) * rng.standard_normal(n))

    far_machine = far_field(rng, near_machine, sr)
    far_snr = rng.uniform(*v.far_snr_db)
    far_noise = (bg * sg.rms(far_machine) * sg.db(-far_snr)
                 + sg.db(level_db - 60.0) * rng.standard_normal(n))
    info.update(near_snr_db=near_snr, far_snr_db=far_snr, level_db=level_db)
    return ClipAudio(near_machine, near_noise, far_machine, far_noise, info)

"""The recording chain: the factory background both microphones hear, and the machine
sound at the far-field microphone (low-passed, reverberant, attenuated)."""

from __future__ import annotations

import numpy as np

import asdlib.synth.signals as sg


def background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS non-stationary factory background (N,): mains hum with drifting level,
    babble-like talkers with syllabic envelopes, ambient noise with slow level swings, and
    occasionally distant clatter."""
    f = sg.freqs(n, sr)
    t_hum = sg.harmonics(sg.phase(np.full(n, 50.0), sr, rng.uniform(0, 6.3)),
                         sg.db(-4.0) ** np.arange(8) * 10 ** (rng.normal(0, 3, 8) / 20),
                         rng.uniform(0, 6.3, 8), 50.0, sr)
    hum = sg.unit(t_hum) * np.exp(0.25 * sg.slow(rng, n, sr, 0.3))
    speech = sg.resonance(f, 500.0, 0.7) * sg.lowpass(f, 3000.0, 2) * sg.highpass(f, 150.0, 2)
    voice = sg.noise(rng, n, speech)
    babble = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):  # talkers: far-apart shifts of one noise
        env = np.exp(1.3 * sg.slow(rng, n, sr, rng.uniform(3.0, 6.0)))
        babble += sg.db(rng.uniform(-6, 0)) * np.roll(voice, int(rng.integers(n))) * env
    babble = sg.unit(babble)
    ambient = sg.noise(rng, n, sg.tilt(f, -3.0) * sg.highpass(f, 30.0))
    ambient = ambient * np.exp(0.35 * sg.slow(rng, n, sr, 0.25))
    bg = (sg.db(rng.uniform(-12, -3)) * hum + sg.db(rng.uniform(-8, 0)) * babble + ambient)
    level = sg.rms(bg)
    for _ in range(int(rng.poisson(1.0))):
        clatter = sg.impact(rng, sr, rng.uniform(0.05, 0.25), 400.0, 3500.0)
        sg.add_at(bg, sg.db(rng.uniform(0, 8)) * level * clatter, int(rng.integers(0, n)))
    return sg.unit(bg)


def far_field(rng: np.random.Generator, near: np.ndarray, sr: int) -> np.ndarray:
    """Machine sound at the far microphone: low-passed, reverberant, attenuated (N,)."""
    n = near.shape[0]
    rt60 = rng.uniform(0.25, 0.7)
    ir_len = int(rt60 * sr)
    t = np.arange(ir_len) / sr
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    drr_db = rng.uniform(-2.0, 6.0)  # direct-to-reverberant ratio
    ir *= np.sqrt(1.0 / (np.sum(ir ** 2) * sg.db(drr_db) ** 2))
    delay = int(rng.integers(int(0.003 * sr), int(0.012 * sr)))
    ir = np.concatenate([np.zeros(delay), [1.0], ir])
    nfft = sg.fast_len(n + ir.size)
    f = sg.freqs(nfft, sr)
    spec = (np.fft.rfft(near, nfft) * np.fft.rfft(ir, nfft)
            * sg.lowpass(f, rng.uniform(2500, 5000), 2))
    return np.fft.irfft(spec, nfft)[:n] * rng.uniform(0.3, 0.6)

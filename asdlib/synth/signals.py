"""Signal helpers of the synthetic sound models: shaped noise, smooth random curves,
filter magnitudes on the rfft grid, running phases, harmonic series and impacts.

Every function that draws takes the clip's ``numpy.random.Generator``; the order of the
draws is part of the generated data (changing it changes the dataset's bytes).
"""

from __future__ import annotations

import numpy as np


def fast_len(n: int) -> int:
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


def rms(x: np.ndarray) -> float:
    """Root mean square (never 0)."""
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit RMS."""
    return x / rms(x)


def db(v: float) -> float:
    """Amplitude factor of ``v`` dB."""
    return 10.0 ** (v / 20.0)


def freqs(n: int, sr: int) -> np.ndarray:
    """Frequencies (Hz) of the rfft grid of ``n`` samples."""
    return np.fft.rfftfreq(n, 1.0 / sr)


def noise(rng: np.random.Generator, n: int, gain: np.ndarray | None = None) -> np.ndarray:
    """Unit-RMS Gaussian noise with magnitude response ``gain`` (on the rfft grid of n)."""
    m = n // 2 + 1
    spec = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    if gain is not None:
        spec *= gain
    spec[0] = 0.0
    return unit(np.fft.irfft(spec, n))


def slow(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
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


def resonance(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    """Magnitude of a second-order band-pass (peak 1 at fc)."""
    ff = np.maximum(f, 1.0)
    return 1.0 / np.sqrt(1.0 + (q * (ff / fc - fc / ff)) ** 2)


def tilt(f: np.ndarray, db_per_octave: float, pivot: float = 1000.0) -> np.ndarray:
    """Magnitude of a spectral tilt of ``db_per_octave`` around ``pivot`` Hz."""
    return 10.0 ** (db_per_octave * np.log2(np.maximum(f, 20.0) / pivot) / 20.0)


def lowpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    """Magnitude of a Butterworth-like low-pass of ``order`` at ``fc``."""
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def highpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    """Magnitude of a Butterworth-like high-pass of ``order`` at ``fc``."""
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def phase(freq_hz: np.ndarray, sr: int, phi0: float = 0.0) -> np.ndarray:
    """Running phase (radians) of an instantaneous frequency track (N,)."""
    return phi0 + (2.0 * np.pi / sr) * np.cumsum(freq_hz)


def harmonics(phase: np.ndarray, amps, phis, f0_max: float, sr: int,
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


def impact(rng: np.random.Generator, sr: int, seconds: float, f_lo: float, f_hi: float,
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


def add_at(x: np.ndarray, burst: np.ndarray, start: int) -> None:
    """Add ``burst`` into ``x`` from sample ``start`` on (cut at the end), in place."""
    end = min(x.shape[0], start + burst.shape[0])
    if end > start:
        x[start:end] += burst[: end - start]

"""Wav loading for DCASE Task 2 clips: validation, channel choice, resampling, length policy.

Channels: DCASE 2026 clips are stereo, channel 0 (left) = near-field microphone (the same
signal as the earlier mono data), channel 1 (right) = far-field microphone with background
noise. 2023-2025 clips are mono.

Resampling is never silent: a file whose rate differs from the requested one is resampled
with ``torchaudio.functional.resample`` and a :class:`ResampleWarning` names the file and
both rates (``load_many`` gathers these into one warning and lists the files).

Length policy: clips of one batch may differ in length (6 to 16 s). The default is to
zero-pad at the end to the longest clip of the batch and hand the padding mask
(True = padded) to the encoder; cropping drops audio and happens only on request.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

#: The rate every model of the project works at (BEATs' input rate); clips at another rate
#: are resampled when read.
SAMPLE_RATE = 16000
#: fbank frames (10 ms each) per time patch of the encoder: BEATs' 16 x 16 patches.
PATCH_FRAMES = 16
#: One wave per clip (`load_clip`): channel 0 (near-field), channel 1 (far-field), or the
#: residual near - RESIDUAL_FAR_WEIGHT * far (what the near microphone hears beyond the
#: far-field scene: the room noise both pick up partly cancels).
MICROPHONES = ("near", "far", "residual")
#: Weight of the far-field channel in the residual view.
RESIDUAL_FAR_WEIGHT = 0.5
#: What training, extraction and scoring can use: a microphone, or "both" (near and far,
#: each on its own).
CHANNELS = (*MICROPHONES, "both")
WAV_FORMATS = ("WAV", "WAVEX", "RF64")
LENGTH_POLICIES = ("pad", "crop", "pad_or_crop")
_UNKNOWN_SIZE = 0xFFFFFFFF


class AudioError(ValueError):
    """A clip that cannot be used: unreadable, truncated, not a wav, empty, non-finite, or the
    wrong channel layout. The message names the file and the cause."""


class ResampleWarning(UserWarning):
    """A clip was resampled because its rate differs from the requested one."""


@dataclass(frozen=True)
class ClipInfo:
    """Header facts of one wav file (after the container has been checked)."""

    path: str
    channels: int
    sample_rate: int
    samples: int
    format: str
    subtype: str


def _check_riff_container(path: Path) -> None:
    """Raise AudioError if a RIFF/RF64 wav is cut short.

    libsndfile reads a truncated file without complaint (it returns fewer frames), so the
    declared size of the ``data`` chunk is compared with the bytes actually present.
    """
    file_size = path.stat().st_size
    if file_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
            return  # not a RIFF wav; the format check below rejects it with libsndfile's words
        endian = ">" if head[:4] == b"RIFX" else "<"
        ds64_data_size = None
        position = 12
        while True:
            chunk_header = handle.read(8)
            if len(chunk_header) < 8:
                raise AudioError(
                    f"{path}: no 'data' chunk before the end of the file at byte {position} "
                    "(file truncated or not a wav)")
            chunk_id = chunk_header[:4]
            (chunk_size,) = struct.unpack(endian + "I", chunk_header[4:])
            position += 8
            if chunk_id == b"ds64":
                body = handle.read(min(chunk_size, 24))
                if len(body) >= 16:
                    ds64_data_size = struct.unpack("<Q", body[8:16])[0]
                handle.seek(position)
            if chunk_id == b"data":
                declared = ds64_data_size if (head[:4] == b"RF64" and ds64_data_size is not None) \
                    else chunk_size
                present = file_size - position
                if declared != _UNKNOWN_SIZE and declared > present:
                    raise AudioError(
                        f"{path}: truncated wav: the data chunk declares {declared} bytes "
                        f"but only {present} are present")
                return
            position += chunk_size + (chunk_size & 1)
            if position > file_size:
                raise AudioError(
                    f"{path}: truncated wav: chunk {chunk_id!r} runs past the end of the file")
            handle.seek(position)


def probe_clip(path: str | os.PathLike) -> ClipInfo:
    """Check that ``path`` is a complete, readable wav and return its header facts.

    Does not read the samples (so NaN samples are not detected here; ``load_clip`` does).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        _check_riff_container(path)
        info = sf.info(str(path))
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: unreadable audio file: {exc}") from exc
    if info.format not in WAV_FORMATS:
        raise AudioError(f"{path}: not a wav file (soundfile reads it as {info.format})")
    if info.frames <= 0:
        raise AudioError(f"{path}: wav file holds no samples")
    return ClipInfo(str(path), int(info.channels), int(info.samplerate), int(info.frames),
                    str(info.format), str(info.subtype))


def _resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample along the last axis (band-limited sinc, torchaudio's default)."""
    import torch
    import torchaudio.functional as taf

    out = taf.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_rate, new_rate)
    return out.numpy().astype(np.float32, copy=False)


def load_channels(path: str | os.PathLike,
                  sample_rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Every channel of one clip as float32 (C, N) in [-1, 1]: (2, N) near and far for a
    2026 stereo clip, (1, N) for a mono one.

    sample_rate: the rate to return; a file at another rate is resampled and a
        ResampleWarning names the file and both rates. None keeps the file's own rate.
    Raises AudioError for a missing, unreadable, truncated, non-wav or empty file, for
    NaN/inf samples and for more than two channels.
    """
    info = probe_clip(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: unreadable audio file: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: wav file holds no samples")
    if data.shape[0] != info.samples:
        raise AudioError(f"{path}: header declares {info.samples} frames, read {data.shape[0]}")
    finite = np.isfinite(data)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise AudioError(f"{path}: {len(bad)} non-finite samples (NaN/inf), first at frame "
                         f"{int(bad[0, 0])} channel {int(bad[0, 1])}")
    if data.shape[1] > 2:
        raise AudioError(f"{path}: {data.shape[1]} channels; expected mono or stereo (near, far)")
    wave = np.ascontiguousarray(data.T, dtype=np.float32)
    if sample_rate is not None and file_rate != sample_rate:
        warnings.warn(f"{path}: resampled from {file_rate} Hz to {sample_rate} Hz",
                      ResampleWarning, stacklevel=2)
        return _resample(wave, int(file_rate), int(sample_rate)), int(sample_rate)
    return wave, int(file_rate)


def load_clip(path: str | os.PathLike, channel: str = "near",
              sample_rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """One microphone of a clip as float32 (N,) (`load_channels` for all).

    channel: "near" -> channel 0 (or the only channel of a mono file);
             "far"  -> channel 1 (AudioError on a mono file: there is no far-field mic);
             "residual" -> near - RESIDUAL_FAR_WEIGHT * far (stereo only, like "far").
    sample_rate: as in `load_channels`. Returns (wave, sr).
    """
    if channel not in MICROPHONES:
        raise ValueError(f"channel must be one of {MICROPHONES}, got {channel!r} "
                         "(load_channels gives every channel)")
    wave, sr = load_channels(path, sample_rate)
    if channel != "near" and len(wave) < 2:
        raise AudioError(f"{path}: channel={channel!r} needs a stereo file (near, far), "
                         "this file is mono (2023-2025 data has only the near-field channel)")
    if channel == "residual":
        return (wave[0] - np.float32(RESIDUAL_FAR_WEIGHT) * wave[1]).astype(np.float32), sr
    return np.ascontiguousarray(wave[0 if channel == "near" else 1]), sr


@dataclass
class LoadedClips:
    """Result of ``load_many``: the clips that loaded, in input order, and the failures.

    paths[i] / waves[i] / sample_rates[i] belong together; ``failures`` maps each path that
    failed to its AudioError; ``resampled`` lists the paths that were resampled.
    """

    paths: list[str] = field(default_factory=list)
    waves: list[np.ndarray] = field(default_factory=list)
    sample_rates: list[int] = field(default_factory=list)
    failures: dict[str, AudioError] = field(default_factory=dict)
    resampled: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waves)


def load_many(paths, channel: str = "near", sample_rate: int | None = SAMPLE_RATE,
              on_error: str = "raise") -> LoadedClips:
    """Load several clips with ``load_clip``.

    on_error="raise": the first bad file raises its AudioError (naming it).
    on_error="collect": bad files are recorded in ``failures`` and the others still load,
    so one corrupt file costs no other work. The return type is the same either way.
    Resampling is reported once, as a single ResampleWarning counting the files.
    """
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
    result = LoadedClips()
    for path in paths:
        path = str(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResampleWarning)
            try:
                wave, sr = load_clip(path, channel=channel, sample_rate=sample_rate)
            except AudioError as exc:
                if on_error == "raise":
                    raise
                result.failures[path] = exc
                continue
        for warning in caught:
            if issubclass(warning.category, ResampleWarning):
                result.resampled.append(path)
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
        result.paths.append(path)
        result.waves.append(wave)
        result.sample_rates.append(sr)
    if result.resampled:
        warnings.warn(f"resampled {len(result.resampled)} clip(s) to {sample_rate} Hz, first: "
                      f"{result.resampled[0]}", ResampleWarning, stacklevel=2)
    return result


def fix_length(wave: np.ndarray, n_samples: int, policy: str = "pad") -> np.ndarray:
    """Bring ``wave`` ((N,) or (C, N)) to ``n_samples`` along the last axis.

    policy "pad": zero-pad at the end; a longer clip is an error (padding never drops audio).
    policy "crop": keep the first ``n_samples``; a shorter clip is an error.
    policy "pad_or_crop": whichever is needed.
    Keep track of the valid length yourself (or use ``collate``) so padding can be masked.
    """
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"policy must be one of {LENGTH_POLICIES}, got {policy!r}")
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    length = wave.shape[-1]
    if length > n_samples:
        if policy == "pad":
            raise ValueError(f"clip has {length} samples, more than {n_samples}; "
                             "policy 'pad' does not crop (use 'crop' or 'pad_or_crop')")
        return wave[..., :n_samples]
    if length < n_samples:
        if policy == "crop":
            raise ValueError(f"clip has {length} samples, fewer than {n_samples}; "
                             "policy 'crop' does not pad (use 'pad' or 'pad_or_crop')")
        widths = [(0, 0)] * (wave.ndim - 1) + [(0, n_samples - length)]
        return np.pad(wave, widths)
    return wave


def collate(waves, policy: str = "pad", n_samples: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Stack clips of different lengths into one batch.

    waves: sequence of (N_i,) arrays (or (C, N_i), all with the same C).
    policy "pad" (default): zero-pad at the end to the longest clip (or to ``n_samples``);
    policy "crop": crop to the shortest clip (or to ``n_samples``);
    policy "pad_or_crop": bring every clip to ``n_samples`` (required).
    Returns (batch (B, Nmax) or (B, C, Nmax) float32, padding_mask (B, Nmax) bool,
    True = padded sample). Pass the mask to the encoder.
    """
    waves = [np.asarray(w, dtype=np.float32) for w in waves]
    if not waves:
        raise ValueError("collate needs at least one clip")
    if len({w.shape[:-1] for w in waves}) != 1:
        raise ValueError(f"clips differ in channel layout: {sorted({w.shape for w in waves})}")
    lengths = np.array([w.shape[-1] for w in waves])
    if n_samples is None:
        if policy == "pad_or_crop":
            raise ValueError("policy 'pad_or_crop' needs n_samples")
        n_samples = int(lengths.max() if policy == "pad" else lengths.min())
    batch = np.stack([fix_length(w, n_samples, policy) for w in waves])
    valid = np.minimum(lengths, n_samples)
    padding_mask = np.arange(n_samples)[None, :] >= valid[:, None]
    return batch, padding_mask


def padded_tensors(waves):
    """`collate` (zero-padded to the longest) as torch tensors: (batch (B, Nmax) float32,
    padding_mask (B, Nmax) bool, True = padded), what ``BEATs.extract`` takes."""
    import torch

    batch, mask = collate(waves)
    return torch.from_numpy(batch), torch.from_numpy(mask)

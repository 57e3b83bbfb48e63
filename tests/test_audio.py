"""Tests for asdlib.audio: validation of bad files, channels, resampling, length policy."""

import warnings

import numpy as np
import pytest
import soundfile as sf

from asdlib.audio import (AudioError, ResampleWarning, collate, fix_length, load_channels, load_clip,
                          load_many, probe_clip)


def write_stereo(path, n=1600, sr=16000):
    """Stereo int16 wav: near channel +0.25, far channel -0.5 (easy to tell apart)."""
    data = np.stack([np.full(n, 0.25), np.full(n, -0.5)], axis=1)
    sf.write(path, data, sr, subtype="PCM_16")
    return path


def write_mono(path, n=1600, sr=16000, value=0.25):
    sf.write(path, np.full(n, value), sr, subtype="PCM_16")
    return path


# ----------------------------------------------------------------- channels

def test_stereo_near_far_both_select_the_right_channel(tmp_path):
    path = write_stereo(tmp_path / "s.wav")
    near, sr = load_clip(path, channel="near")
    far, _ = load_clip(path, channel="far")
    both, _ = load_channels(path)
    assert sr == 16000 and both.shape == (2, 1600)
    assert np.array_equal(both[0], near) and np.array_equal(both[1], far)
    with pytest.raises(ValueError, match="load_channels"):
        load_clip(path, channel="both")
    assert near.dtype == np.float32 and near.shape == (1600,)
    assert np.allclose(near, 0.25, atol=1e-4)
    assert np.allclose(far, -0.5, atol=1e-4)
    assert both.shape == (2, 1600)
    assert np.array_equal(both[0], near) and np.array_equal(both[1], far)


def test_mono_near_returns_the_channel(tmp_path):
    wave, sr = load_clip(write_mono(tmp_path / "m.wav"), channel="near")
    assert wave.shape == (1600,) and sr == 16000
    assert np.allclose(wave, 0.25, atol=1e-4)


def test_mono_far_is_a_clear_error_and_all_channels_is_one(tmp_path):
    path = write_mono(tmp_path / "m.wav")
    with pytest.raises(AudioError, match=r"m\.wav.*mono"):
        load_clip(path, channel="far")
    assert load_channels(path)[0].shape[0] == 1


def test_unknown_channel_name_rejected(tmp_path):
    with pytest.raises(ValueError, match="channel"):
        load_clip(write_mono(tmp_path / "m.wav"), channel="left")


def test_more_than_two_channels_rejected(tmp_path):
    path = tmp_path / "c3.wav"
    sf.write(path, np.zeros((100, 3)), 16000)
    with pytest.raises(AudioError, match="3 channels"):
        load_clip(path)


# ----------------------------------------------------------------- resampling

def test_resampling_48k_to_16k_is_reported_and_length_right(tmp_path):
    path = tmp_path / "hi.wav"
    t = np.arange(48000) / 48000
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 48000, subtype="PCM_16")
    with pytest.warns(ResampleWarning, match=r"hi\.wav.*48000 Hz to 16000 Hz"):
        wave, sr = load_clip(path)
    assert sr == 16000 and wave.shape == (16000,) and wave.dtype == np.float32
    assert 0.4 < np.abs(wave).max() < 0.6  # the tone survives


def test_resampling_stereo_keeps_both_channels(tmp_path):
    path = write_stereo(tmp_path / "s48.wav", n=4800, sr=48000)
    with pytest.warns(ResampleWarning):
        both, sr = load_channels(path)
    assert both.shape == (2, 1600) and sr == 16000


def test_no_resampling_no_warning_and_native_rate_kept(tmp_path):
    path = write_mono(tmp_path / "m.wav", sr=22050)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wave, sr = load_clip(path, sample_rate=None)
        assert sr == 22050 and wave.shape == (1600,)
        load_clip(write_mono(tmp_path / "m16.wav"))


# ----------------------------------------------------------------- bad files, one by one

def test_truncated_wav_is_an_error(tmp_path):
    path = write_stereo(tmp_path / "cut.wav", n=16000)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav.*truncated"):
        load_clip(path)
    with pytest.raises(AudioError, match="truncated"):
        probe_clip(path)


def test_wav_cut_inside_the_header_is_an_error(tmp_path):
    path = write_stereo(tmp_path / "head.wav")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"head\.wav"):
        load_clip(path)


def test_non_wav_bytes_are_an_error(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"this is not audio at all " * 20)
    with pytest.raises(AudioError, match=r"junk\.wav.*unreadable"):
        load_clip(path)


def test_other_audio_format_is_not_a_wav(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(1600), 16000, format="FLAC")
    with pytest.raises(AudioError, match=r"clip\.wav.*not a wav.*FLAC"):
        load_clip(path)


def test_nan_samples_are_an_error(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.zeros(1600, dtype=np.float32)
    data[100] = np.nan
    data[200] = np.inf
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*2 non-finite.*frame 100"):
        load_clip(path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_clip(path)


def test_wav_without_samples_is_an_error(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioError, match=r"zero\.wav.*no samples"):
        load_clip(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(AudioError, match=r"gone\.wav.*no such file"):
        load_clip(tmp_path / "gone.wav")


def test_probe_reports_header_facts(tmp_path):
    info = probe_clip(write_stereo(tmp_path / "s.wav", n=3200))
    assert (info.channels, info.sample_rate, info.samples) == (2, 16000, 3200)


# ----------------------------------------------------------------- load_many

def test_load_many_raises_naming_the_corrupt_file(tmp_path):
    good = write_mono(tmp_path / "good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(AudioError, match=r"bad\.wav"):
        load_many([good, bad])


def test_load_many_collect_keeps_the_other_clips(tmp_path):
    paths = [write_mono(tmp_path / f"ok{i}.wav", n=800 + i) for i in range(3)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage" * 50)
    result = load_many([paths[0], bad, paths[1], paths[2]], on_error="collect")
    assert result.paths == [str(p) for p in paths]
    assert [len(w) for w in result.waves] == [800, 801, 802]
    assert list(result.failures) == [str(bad)]
    assert isinstance(result.failures[str(bad)], AudioError)


def test_load_many_reports_resampling_once(tmp_path):
    paths = [write_mono(tmp_path / f"r{i}.wav", n=4800, sr=48000) for i in range(3)]
    with pytest.warns(ResampleWarning) as record:
        result = load_many(paths)
    assert len(record) == 1 and "3 clip(s)" in str(record[0].message)
    assert result.resampled == [str(p) for p in paths]
    assert result.sample_rates == [16000] * 3


# ----------------------------------------------------------------- length policy

def test_fix_length_pad_and_crop():
    wave = np.arange(5, dtype=np.float32)
    assert np.array_equal(fix_length(wave, 7), [0, 1, 2, 3, 4, 0, 0])
    assert np.array_equal(fix_length(wave, 3, policy="crop"), [0, 1, 2])
    assert fix_length(np.ones((2, 5)), 6, policy="pad_or_crop").shape == (2, 6)
    with pytest.raises(ValueError, match="does not crop"):
        fix_length(wave, 3)
    with pytest.raises(ValueError, match="does not pad"):
        fix_length(wave, 7, policy="crop")


def test_collate_mixed_lengths_pads_to_longest_with_mask():
    waves = [np.ones(3), np.ones(5), np.ones(1)]
    batch, mask = collate(waves)
    assert batch.shape == (3, 5) and batch.dtype == np.float32
    assert mask.dtype == bool
    assert mask.sum(axis=1).tolist() == [2, 0, 4]
    assert np.all(batch[mask] == 0) and np.all(batch[~mask] == 1)


def test_collate_crop_on_request_and_fixed_length():
    waves = [np.ones(3), np.ones(5)]
    batch, mask = collate(waves, policy="crop")
    assert batch.shape == (2, 3) and not mask.any()
    batch, mask = collate(waves, policy="pad_or_crop", n_samples=4)
    assert batch.shape == (2, 4) and mask.tolist() == [[False, False, False, True]] + [[False] * 4]


def test_collate_stereo_clips():
    batch, mask = collate([np.ones((2, 3)), np.ones((2, 4))])
    assert batch.shape == (2, 2, 4) and mask.shape == (2, 4) and mask[0, 3]

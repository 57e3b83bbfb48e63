"""Channel modes of a run: near, far, the residual near - 0.5 far, and both (near and far
scored apart and combined per clip)."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asdlib import audio, experiment, floors, scoring
from asdlib.adaptation.training import load_training_waves
from asdlib.audio import AudioError, load_clip
from test_features import make_table, run


def write_stereo(path, n=1600, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.4, 0.4, size=(n, 2)), 16000, subtype="FLOAT")
    return path


def test_residual_is_near_minus_half_far(tmp_path):
    path = write_stereo(tmp_path / "s.wav")
    near, far = load_clip(path, "near")[0], load_clip(path, "far")[0]
    residual, sr = load_clip(path, "residual")
    assert sr == 16000 and residual.dtype == np.float32 and residual.shape == near.shape
    np.testing.assert_allclose(residual, near - audio.RESIDUAL_FAR_WEIGHT * far, atol=1e-7)
    assert not np.allclose(residual, near)


def test_residual_of_a_mono_clip_is_a_clear_error(tmp_path):
    path = tmp_path / "m.wav"
    sf.write(path, np.zeros(800), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"m\.wav.*'residual'.*mono"):
        load_clip(path, "residual")


def test_every_channel_mode_is_an_option_of_a_run():
    assert experiment.CHANNELS == ("near", "far", "residual", "both")
    assert [experiment.view_channel(c) for c in experiment.CHANNELS] == [
        "near", "far", "residual", "near"]


def test_training_waves_both_gives_each_microphone_and_mono_gives_one(tmp_path):
    stereo = write_stereo(tmp_path / "s.wav")
    mono = tmp_path / "m.wav"
    sf.write(mono, np.full(800, 0.25), 16000, subtype="PCM_16")
    rows = pd.DataFrame({"path": [str(stereo), str(mono)]})
    waves, row_of = load_training_waves(rows, "both")
    assert list(row_of) == [0, 0, 1] and [len(w) for w in waves] == [1600, 1600, 800]
    np.testing.assert_array_equal(waves[1], load_clip(stereo, "far")[0])
    residual, _ = load_training_waves(rows.iloc[:1], "residual")
    np.testing.assert_array_equal(residual[0], load_clip(stereo, "residual")[0])


def _scores(machine, branch, self_scores, test_scores):
    n_self, n_test = len(self_scores), len(test_scores)
    return pd.DataFrame({
        "machine": machine, "branch": branch,
        "name": [f"train_{i}" for i in range(n_self)] + [f"test_{i}" for i in range(n_test)],
        "score": list(self_scores) + list(test_scores),
        "is_self": [True] * n_self + [False] * n_test,
        "domain": [None] * n_self + ["source"] * n_test,
        "label": [None] * n_self + ["normal"] * n_test, "kind": None})


def test_combine_channels_averages_scores_standardised_by_their_bank():
    near = _scores("fan", "utt_knn", [1.0, 2.0, 3.0], [2.0, 5.0])
    far = _scores("fan", "utt_knn", [10.0, 30.0, 50.0], [90.0, 10.0])
    combined = scoring.combine_channels({"near": near, "far": far[::-1].reset_index(drop=True)})
    assert list(combined.columns) == list(near.columns) and len(combined) == 5
    got = combined.set_index("name")["score"]
    z_near = (np.array([2.0, 5.0]) - 2.0) / np.std([1.0, 2.0, 3.0])
    z_far = (np.array([90.0, 10.0]) - 30.0) / np.std([10.0, 30.0, 50.0])
    np.testing.assert_allclose(got[["test_0", "test_1"]], (z_near + z_far) / 2)
    np.testing.assert_allclose(got[["train_0", "train_1", "train_2"]],
                               [(-1.2247 - 1.2247) / 2, 0.0, 1.2247], atol=1e-4)
    # a branch without bank self-scores is standardised by its test scores
    no_self = scoring.combine_channels({"near": near[~near["is_self"]], "far": far[~far["is_self"]]})
    np.testing.assert_allclose(no_self["score"], [(-1 + 1) / 2, (1 - 1) / 2])


def test_combine_channels_refuses_tables_of_other_clips():
    near = _scores("fan", "utt_knn", [1.0, 2.0, 3.0], [2.0, 5.0])
    far = _scores("fan", "utt_knn", [1.0, 2.0, 3.0], [2.0, 5.0, 7.0])
    with pytest.raises(ValueError, match="different clips"):
        scoring.combine_channels({"near": near, "far": far})


def test_score_run_both_combines_the_near_and_far_runs(tmp_path):
    table = make_table(tmp_path / "data")
    store = run(table, tmp_path / "store", channel="both")
    specs = [scoring.BranchSpec("utt_knn"), scoring.BranchSpec("band_knn")]
    per = {c: scoring.score_run(store, table, specs, c, progress=False) for c in ("near", "far")}
    assert not np.allclose(per["near"]["score"], per["far"]["score"])
    both = scoring.score_run(store, table, specs, "both", maps_dir=tmp_path / "maps",
                             progress=False)
    pd.testing.assert_frame_equal(both, scoring.combine_channels(per))
    assert set(both["branch"]) == {"utt_knn", "band_knn"}


def test_floors_of_both_microphones_are_combined(tmp_path):
    table = make_table(tmp_path / "data")
    per = {c: floors.floors(table, c, progress=False) for c in ("near", "far")}
    both = floors.floors(table, "both", progress=False)
    pd.testing.assert_frame_equal(both, scoring.combine_channels(per))
    residual = floors.floors(table, "residual", progress=False)
    assert not np.allclose(residual["score"], per["near"]["score"])

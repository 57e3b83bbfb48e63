"""Fusion: self-score calibration, weighted sums, weight selection, LOMO, decisions."""

import numpy as np
import pandas as pd
import pytest

from asdlib import fusion, metrics


def _scores(seed=0, machines=("m1", "m2", "m3"), n_bank=30, n_test=40, strength=None):
    """A tidy score table: branch 'good' separates anomalies, 'noise' does not."""
    rng = np.random.default_rng(seed)
    strength = strength or {"good": 2.0, "weak": 0.7, "noise": 0.0}
    rows = []
    for m in machines:
        label = np.array(["normal", "anomaly"] * (n_test // 2))
        domain = np.repeat(["source", "target"], n_test // 2)
        for b, s in strength.items():
            offset, scale = rng.normal(5, 2), rng.uniform(0.5, 3)
            bank = offset + scale * rng.normal(size=n_bank)
            test = offset + scale * (rng.normal(size=n_test) + s * (label == "anomaly"))
            rows += [dict(machine=m, name=f"bank_{i}", branch=b, score=v, is_self=True)
                     for i, v in enumerate(bank)]
            rows += [dict(machine=m, name=f"test_{i}", branch=b, score=v, is_self=False,
                          label=label[i], domain=domain[i]) for i, v in enumerate(test)]
    return pd.DataFrame(rows)


def test_calibrate_uses_self_scores_only():
    cal = fusion.calibrate(_scores())
    own = cal[cal["is_self"]].groupby(["machine", "branch"])["z"]
    np.testing.assert_allclose(own.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(own.std(ddof=0), 1, atol=1e-12)
    # test z-scores use the bank statistics, not their own
    test = cal[~cal["is_self"]].groupby(["machine", "branch"])["z"].mean()
    assert (test.abs() > 1e-3).any()


def test_calibrate_requires_self_scores():
    s = _scores()
    s = s[~((s["branch"] == "good") & s["is_self"] & (s["machine"] == "m2"))]
    with pytest.raises(ValueError, match="good.*m2"):
        fusion.calibrate(s)


def test_fuse_is_weighted_sum_of_z():
    cal = fusion.calibrate(_scores())
    test, bank = fusion.fuse(cal, {"good": 2.0, "weak": 0.5})
    wide = cal[~cal["is_self"]].pivot_table(index=["machine", "name"], columns="branch",
                                             values="z")
    expect = 2.0 * wide["good"] + 0.5 * wide["weak"]
    got = test.set_index(["machine", "name"])["score"]
    np.testing.assert_allclose(got.loc[expect.index].to_numpy(), expect.to_numpy())
    assert len(bank) == 3 * 30 and {"domain", "label"} <= set(test.columns)


def test_fuse_missing_branch_is_an_error():
    cal = fusion.calibrate(_scores())
    with pytest.raises(KeyError, match="absent"):
        fusion.fuse(cal, {"good": 1.0, "absent": 1.0})


def test_select_weights_finds_the_informative_branch():
    cal = fusion.calibrate(_scores(seed=1))
    w = fusion.select_weights(cal, ["good", "noise"])
    equal = fusion.official_of(fusion.fuse(cal, {"good": 1.0, "noise": 1.0})[0])
    chosen = fusion.official_of(fusion.fuse(cal, w)[0])
    assert w["good"] > w["noise"]
    assert chosen >= equal


def test_leave_one_machine_out_never_sees_the_scored_machine():
    cal = fusion.calibrate(_scores(seed=2))
    test, bank, used = fusion.leave_one_machine_out(cal, ["good", "noise"])
    assert set(used) == {"m1", "m2", "m3"}
    # the weights used on m1 are exactly those selected without m1
    assert used["m1"] == fusion.select_weights(cal[cal["machine"] != "m1"], ["good", "noise"])
    assert len(test) == 3 * 40 and len(bank) == 3 * 30


def test_lomo_decisions_use_the_left_out_machines_own_weights():
    """A machine's LOMO threshold comes from its bank fused with its own LOMO weights (on
    this data m2's LOMO weights differ from the dev ones, and so do 5 of its decisions)."""
    branches = ["good", "weak", "noise"]
    cal = fusion.calibrate(_scores(seed=0, strength={"good": 1.0, "weak": 0.8, "noise": 0.0}))
    fused, config = fusion.run_systems(cal, {"S": branches})
    honest = fused[fused["selection"] == "lomo"].set_index(["machine", "name"])
    _, _, used = fusion.leave_one_machine_out(cal, branches)
    assert used["m2"] != config.weights["S"]
    for machine, weights in used.items():
        test, bank = fusion.fuse(cal[cal["machine"] == machine], weights)
        expect = fusion.decisions(test, bank).to_numpy()
        got = honest.loc[[(machine, n) for n in test["name"]], "decision"].to_numpy()
        np.testing.assert_array_equal(got, expect)
        _, dev_bank = fusion.fuse(cal[cal["machine"] == machine], config.weights["S"])
        if machine == "m2":
            assert (fusion.decisions(test, dev_bank).to_numpy() != expect).sum() == 5


def test_decisions_at_bank_percentile():
    cal = fusion.calibrate(_scores(seed=3))
    test, bank = fusion.fuse(cal, {"good": 1.0})
    dec = fusion.decisions(test, bank, percentile=90)
    for m in ("m1", "m2", "m3"):
        thr = np.quantile(bank.loc[bank["machine"] == m, "score"], 0.9)
        sel = test["machine"] == m
        np.testing.assert_array_equal(dec[sel], (test.loc[sel, "score"] > thr).astype(int))


def test_fusion_config_round_trip(tmp_path):
    cfg = fusion.FusionConfig(weights={"System 4": {"adabeam": 1.0, "band_knn": 0.5}},
                              selected_on="dev")
    cfg.save(tmp_path / "f.json")
    back = fusion.FusionConfig.load(tmp_path / "f.json")
    assert back.weights == cfg.weights and back.decision_percentile == 90.0


def test_systems_match_the_report():
    assert fusion.SYSTEMS["System 1"] == ["fine_selective"]  # one fine-grained branch
    assert len(fusion.SYSTEMS["System 2"]) == 6 and "fine_selective" in fusion.SYSTEMS["System 2"]
    # System 3: System 2 plus the second aggregation of the same fine-grained evidence
    assert set(fusion.SYSTEMS["System 3"]) == set(fusion.SYSTEMS["System 2"]) | {"fine_broad"}
    assert set(fusion.SYSTEMS["System 4"]) == {"adabeam", "band_knn"}


def test_official_of_matches_metrics():
    cal = fusion.calibrate(_scores(seed=4))
    test, _ = fusion.fuse(cal, {"good": 1.0, "weak": 1.0})
    table = metrics.evaluate_table(test)
    assert fusion.official_of(test) == pytest.approx(metrics.official_score(table.drop("Overall")))


def test_every_member_branch_keeps_a_weight():
    """A system is what it declares: the search never drops a member (a noise branch keeps
    the smallest weight), and equal weighting gives every member 1 without labels."""
    cal = fusion.calibrate(_scores(seed=1))
    fused, config = fusion.run_systems(cal, {"S": ["good", "noise"]})
    assert min(config.weights["S"].values()) >= min(fusion.WEIGHT_GRID) > 0
    assert config.weights["S"]["good"] > config.weights["S"]["noise"]
    _, equal = fusion.run_systems(cal, {"S": ["good", "noise"]}, weighting="equal")
    assert equal.weights["S"] == {"good": 1.0, "noise": 1.0}
    assert "equal" in equal.selected_on
    with pytest.raises(ValueError, match="weighting"):
        fusion.run_systems(cal, {"S": ["good"]}, weighting="best")

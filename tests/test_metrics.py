"""The official DCASE Task 2 metric: reference results of the official evaluator,
published numbers, hand-computed cases and the submission files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asdlib import metrics
from asdlib.metrics import MetricError, SubmissionError

FIXTURES = Path(__file__).parent / "fixtures" / "dcase_evaluator"
SYSTEMS = ("sysA", "sysB")


# ----------------------------------------------------------------- official evaluator

def parse_official_result(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-machine rows and the summary rows of an official `<team>_result.csv`.

    The file has one block per machine (machine name, header, section-00 row, per-machine
    means), then the "... over all machine types ..." rows and the `official score` row.
    """
    per_machine, summary = {}, {}
    rows = list(csv.reader(path.read_text().splitlines()))
    machine, header = None, None
    for row in rows:
        if not row or not any(row):
            continue
        if len(row) == 1:
            machine = row[0]
        elif row[0] == "section":
            header = row
        elif row[0] == "00" and machine is not None:
            per_machine[machine] = {h: float(v) for h, v in zip(header[1:], row[1:])}
        elif row[0] == "official score":
            summary["official score"] = float(row[2])
        elif "over all machine types" in row[0]:
            summary[row[0].split(" over")[0] + " AUC"] = float(row[2])
            summary[row[0].split(" over")[0] + " pAUC"] = float(row[3])
    return per_machine, summary


@pytest.mark.parametrize("system", SYSTEMS)
def test_reproduces_official_evaluator(system):
    expected, summary = parse_official_result(FIXTURES / "official_results" / f"{system}_result.csv")
    assert len(expected) == 9
    table = metrics.evaluate_submission(FIXTURES / "scores" / system, FIXTURES)
    assert list(table.index[:-1]) == list(expected)   # the evaluator's (sorted) order
    for machine, ref in expected.items():
        row = table.loc[machine]
        assert row["AUC_s"] == pytest.approx(ref["AUC (source)"], abs=1e-9)
        assert row["AUC_t"] == pytest.approx(ref["AUC (target)"], abs=1e-9)
        assert row["pAUC"] == pytest.approx(ref["pAUC"], abs=1e-9)
        # the decision-based numbers of the evaluator, per domain
        for ours, theirs in [("precision_s", "precision (source)"),
                             ("precision_t", "precision (target)"),
                             ("recall_s", "recall (source)"), ("recall_t", "recall (target)"),
                             ("F1_s", "F1 score (source)"), ("F1_t", "F1 score (target)")]:
            assert row[ours] == pytest.approx(ref[theirs], abs=1e-9), (machine, ours)
    assert table.loc["Overall", "hmean"] == pytest.approx(summary["official score"], abs=1e-9)
    assert metrics.official_score(table) == pytest.approx(summary["official score"], abs=1e-9)
    # the evaluator's pooled summary rows
    machines = table.drop(index="Overall")
    aucs = np.concatenate([machines["AUC_s"], machines["AUC_t"]])
    assert metrics.hmean(aucs) == pytest.approx(summary["harmonic mean AUC"], abs=1e-9)
    assert metrics.hmean(machines["pAUC"]) == pytest.approx(summary["harmonic mean pAUC"],
                                                             abs=1e-9)
    assert aucs.mean() == pytest.approx(summary["arithmetic mean AUC"], abs=1e-9)


def test_ground_truth_reader():
    gt = metrics.read_ground_truth(FIXTURES, "AirCompressor")
    assert list(gt.columns[:4]) == ["name", "label", "is_target", "domain"]
    assert len(gt) == 200 and gt["name"].is_unique
    assert set(gt["label"]) == {0, 1} and set(gt["domain"]) == {"source", "target"}
    first = gt.iloc[0]
    assert first["name"] == "section_00_0001.wav"
    assert first["full_name"] == "section_00_source_test_normal_0001_fl_2_nos_3"
    # the full name agrees with the label and domain columns
    for _, r in gt.iterrows():
        assert r["domain"] in r["full_name"]
        assert ("anomaly" in r["full_name"]) == bool(r["label"])
    with pytest.raises(SubmissionError, match="not found"):
        metrics.read_ground_truth(FIXTURES, "NoSuchMachine")


def test_published_2026_eval_baseline():
    # DCASE 2026 evaluation-set MSE baseline, AUC_s / AUC_t / pAUC per machine (rounded).
    values = {"ToyDrone": (.7126, .4680, .5511), "ToothBrush": (.5902, .6434, .5979),
              "SewingMachine": (.6484, .6142, .5811),
              "BlowerDustCollector": (.6948, .8838, .6179), "Sander": (.6714, .4402, .5089)}
    table = pd.DataFrame(values, index=["AUC_s", "AUC_t", "pAUC"]).T
    assert metrics.official_score(table) == pytest.approx(0.5980323, abs=5e-8)
    assert round(metrics.official_score(table), 5) == 0.59803
    # the mapping form gives the same
    as_dicts = {m: {"auc_s": a, "auc_t": b, "pauc": c} for m, (a, b, c) in values.items()}
    assert metrics.official_score(as_dicts) == metrics.official_score(table)


# ----------------------------------------------------------------- hand-computed cases

def _clips():
    """6 source normals, 4 target normals, 4 anomalies (2 per domain)."""
    y = np.array([0] * 6 + [0] * 4 + [1, 1, 1, 1])
    t = np.array([0] * 6 + [1] * 4 + [0, 1, 0, 1])
    return y, t


def test_perfect_and_reversed_scores():
    y, t = _clips()
    perfect = metrics.machine_metrics(y, y.astype(float), t)
    assert perfect == {"auc_s": 1.0, "auc_t": 1.0, "pauc": 1.0}
    reversed_ = metrics.machine_metrics(y, -y.astype(float), t)
    assert reversed_["auc_s"] == 0.0 and reversed_["auc_t"] == 0.0
    # sklearn's McClish standardisation maps a zero partial area to its floor 0.5*(1 - 1/19)
    assert reversed_["pauc"] == pytest.approx(roc_auc_score(y, -y, max_fpr=0.1))
    assert metrics.hmean([1.0, 0.0, 0.5]) == 0.0


def test_domain_subsets_use_all_anomalies():
    y, t = _clips()
    rng = np.random.default_rng(0)
    s = rng.normal(size=len(y))
    m = metrics.machine_metrics(y, s, t)
    src = (t == 0) | (y == 1)
    tgt = (t == 1) | (y == 1)
    assert m["auc_s"] == roc_auc_score(y[src], s[src])
    assert m["auc_t"] == roc_auc_score(y[tgt], s[tgt])
    # string labels and domains are accepted and mean the same
    labels = np.where(y == 1, "anomaly", "normal")
    domains = np.where(t == 1, "target", "source")
    assert metrics.machine_metrics(labels, s, domains) == m


def test_ties_count_half_like_sklearn():
    # 2 normals, 2 anomalies; one anomaly ties one normal -> pairs: 3 wins + 0.5 tie out of 4
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.5, 0.5, 0.9])
    t = np.array([0, 1, 0, 1])
    m = metrics.machine_metrics(y, s, t)
    assert m["auc_s"] == pytest.approx(1.0)      # source normal 0.1 below both anomalies
    assert m["auc_t"] == pytest.approx(0.75)     # target normal 0.5: one tie, one win
    all_tied = metrics.machine_metrics(y, np.ones(4), t)
    assert all_tied["auc_s"] == 0.5 and all_tied["auc_t"] == 0.5
    assert all_tied["pauc"] == pytest.approx(roc_auc_score(y, np.ones(4), max_fpr=0.1))


def _direct_mcclish(y, s, max_fpr):
    """Partial ROC area up to max_fpr by explicit trapezoids over the ROC polygon, standardised."""
    thresholds = np.unique(s)[::-1]
    pos, neg = (y == 1).sum(), (y == 0).sum()
    fpr = [0.0] + [((s >= th) & (y == 0)).sum() / neg for th in thresholds]
    tpr = [0.0] + [((s >= th) & (y == 1)).sum() / pos for th in thresholds]
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(fpr, tpr), zip(fpr[1:], tpr[1:])):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:   # cut the segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    lo, hi = max_fpr ** 2 / 2, max_fpr
    return 0.5 * (1 + (area - lo) / (hi - lo))


def test_pauc_is_mcclish_standardised():
    # 20 normals: fpr steps of 0.05, so max_fpr = 0.1 covers the two highest normals
    y = np.array([0] * 20 + [1] * 5)
    s = np.concatenate([np.arange(20) / 20.0, [0.975, 0.96, 0.93, 0.5, 0.2]])
    t = np.array([0, 1] * 10 + [0] * 5)
    pauc = metrics.machine_metrics(y, s, t)["pauc"]
    # by hand: ROC up to fpr 0.1 -> tpr 0.4 at fpr 0 (0.975, 0.96 > 0.95), then normal 0.95,
    # then 0.93 anomaly (tpr 0.6), normal 0.90 -> fpr 0.1. Area = 0.05*0.4 + 0.05*0.6 = 0.05
    assert _direct_mcclish(y, s, 0.1) == pytest.approx(0.5 * (1 + (0.05 - 0.005) / 0.095))
    assert pauc == pytest.approx(_direct_mcclish(y, s, 0.1), abs=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        s = rng.normal(size=60).round(1) + y * 0.5     # rounding makes ties
        t = rng.integers(0, 2, 60)
        assert metrics.machine_metrics(y, s, t)["pauc"] == pytest.approx(
            _direct_mcclish(y, s, 0.1), abs=1e-12)


def test_clear_errors():
    y, t = _clips()
    s = np.linspace(0, 1, len(y))
    with pytest.raises(MetricError, match="target-domain normal"):
        metrics.machine_metrics(y[t == 0], s[t == 0], t[t == 0])
    with pytest.raises(MetricError, match="normals and anomalies"):
        metrics.machine_metrics(np.zeros(4), np.arange(4.0), [0, 1, 0, 1])
    bad = s.copy()
    bad[3] = np.nan
    with pytest.raises(MetricError, match=r"NaN.*positions \[3\]"):
        metrics.machine_metrics(y, bad, t)
    with pytest.raises(MetricError, match="scores for"):
        metrics.machine_metrics(y, s[:-1], t)
    with pytest.raises(MetricError, match="label"):
        metrics.machine_metrics(np.where(y == 1, "anomalous", "normal"), s, t)
    with pytest.raises(MetricError, match="no values"):
        metrics.hmean([])


def test_kind_auc():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.25, 0.05])
    kinds = np.array(["", "", "", "", "crack", "crack", "loose", "loose"], dtype=object)
    out = metrics.kind_auc(y, s, kinds)
    assert list(out) == ["crack", "loose"]
    assert out["crack"] == 1.0
    assert out["loose"] == pytest.approx((2 + 0) / 8)   # 0.25 beats two normals, 0.05 none


def test_domain_pair_auc_splits_auc_s_and_auc_t_by_domain():
    # normals: source 0.1 0.2, target 0.5 0.6; anomalies: source 0.3 0.7, target 0.55 0.9
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    d = np.array(["source", "source", "target", "target", "source", "source", "target", "target"])
    s = np.array([0.1, 0.2, 0.5, 0.6, 0.3, 0.7, 0.55, 0.9])
    out = metrics.domain_pair_auc(y, s, d)
    assert list(out) == list(metrics.DOMAIN_PAIRS)
    assert out == {"Ns-As": 1.0, "Ns-At": 1.0, "Nt-As": 0.5, "Nt-At": 0.75}
    # AUC_s pools the source normals with both anomaly domains: the mean of its two parts
    # when both domains have as many anomalies
    m = metrics.machine_metrics(y, s, d)
    assert m["auc_s"] == pytest.approx((out["Ns-As"] + out["Ns-At"]) / 2)
    assert m["auc_t"] == pytest.approx((out["Nt-As"] + out["Nt-At"]) / 2)
    with pytest.raises(MetricError, match="Ns-As: needs normals and anomalies"):  # no source anomaly
        metrics.domain_pair_auc(y[[0, 1, 2, 3, 6, 7]], s[[0, 1, 2, 3, 6, 7]], d[[0, 1, 2, 3, 6, 7]])


def test_domain_pair_table_averages_the_machines_of_each_branch():
    from asdlib import scoring

    frame = _tidy(seed=3).assign(branch="a", is_self=False)
    frame = pd.concat([frame, frame.assign(branch="b", score=-frame["score"]),
                       frame.assign(is_self=True, score=np.nan)])
    table = scoring.domain_pair_table(frame)
    assert list(table.index) == ["a", "b"] and list(table.columns) == list(metrics.DOMAIN_PAIRS)
    test = frame[(frame["branch"] == "a") & ~frame["is_self"]]
    expect = np.mean([metrics.domain_pair_auc(g["label"], g["score"], g["domain"])["Nt-As"]
                      for _, g in test.groupby("machine")])
    assert table.loc["a", "Nt-As"] == pytest.approx(expect)
    assert table.loc["b"].to_numpy() == pytest.approx(1 - table.loc["a"].to_numpy())


# ----------------------------------------------------------------- Table 1

def _tidy(seed=0, machines=("fan", "valveEmu")):
    rng = np.random.default_rng(seed)
    rows = []
    for machine in machines:
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                for i in range(50):
                    kind = "" if label == "normal" else ("crack" if i % 2 else "noise")
                    score = rng.normal() + (0.8 if label == "anomaly" else 0.0)
                    rows.append(dict(machine=machine, domain=domain, label=label, score=score,
                                     kind=kind,
                                     name=f"section_00_{domain}_test_{label}_{i:04d}.wav"))
    return pd.DataFrame(rows)


def test_table1_layout():
    df = _tidy()
    table = metrics.evaluate_table(df)
    assert list(table.columns) == ["AUC_s", "AUC_t", "pAUC", "hmean"]
    assert list(table.index) == ["fan", "valveEmu", "Overall"]
    assert table.index.name == "machine"
    for machine in ("fan", "valveEmu"):
        g = df[df.machine == machine]
        m = metrics.machine_metrics(g.label, g.score, g.domain)
        row = table.loc[machine]
        assert (row["AUC_s"], row["AUC_t"], row["pAUC"]) == (m["auc_s"], m["auc_t"], m["pauc"])
        assert row["hmean"] == pytest.approx(3 / (1 / m["auc_s"] + 1 / m["auc_t"] + 1 / m["pauc"]))
    per = table.drop(index="Overall")
    for col in ("AUC_s", "AUC_t", "pAUC"):
        assert table.loc["Overall", col] == pytest.approx(per[col].mean())
    pooled = per[["AUC_s", "AUC_t", "pAUC"]].to_numpy().ravel()
    assert table.loc["Overall", "hmean"] == pytest.approx(len(pooled) / np.sum(1 / pooled))
    # pooled hmean differs from the mean of per-machine hmeans in general
    assert table.loc["Overall", "hmean"] != pytest.approx(per["hmean"].mean(), abs=1e-12)
    md = metrics.table_markdown(table)
    assert md.splitlines()[0] == "| machine | AUC_s | AUC_t | pAUC | hmean |"
    assert md.splitlines()[-1].startswith("| Overall | ")


def test_table_markdown_multiindex_layout():
    """The Table-1 layout: machine once per block, Overall bold, tuple columns, NaN empty."""
    from asdlib.results import TABLE1_MARKDOWN

    idx = pd.MultiIndex.from_tuples([("fan", "AUC_s"), ("fan", "pAUC"), ("Overall", "hmean")],
                                    names=["machine", "metric"])
    table = pd.DataFrame({("S1", "ours"): [61.234, np.nan, 70.0], "S2": [1.0, 2.0, 3.0]},
                         index=idx)
    assert metrics.table_markdown(table, **TABLE1_MARKDOWN) == (
        "| Machine | Metric | S1 / ours | S2 |\n"
        "|---|---|---:|---:|\n"
        "| fan | AUC_s | 61.23 | 1.00 |\n"
        "|  | pAUC |  | 2.00 |\n"
        "| **Overall** | hmean | 70.00 | 3.00 |\n")
    plain = metrics.table_markdown(table)
    assert plain.splitlines()[:2] == ["| machine | metric | S1 / ours | S2 |",
                                      "|---|---|---|---|"]
    assert plain.splitlines()[2] == "| fan | AUC_s | 6123.40 | 100.00 |"
    with pytest.raises(ValueError, match="index labels"):
        metrics.table_markdown(table, index_labels=("Machine",))


def test_table_with_kinds_and_errors():
    df = _tidy()
    table = metrics.evaluate_table(df, kind_column="kind")
    assert {"AUC[crack]", "AUC[noise]"} <= set(table.columns)
    g = df[df.machine == "fan"]
    assert table.loc["fan", "AUC[crack]"] == metrics.kind_auc(g.label, g.score, g.kind)["crack"]
    dup = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(SubmissionError, match=df.iloc[0]["name"]):
        metrics.evaluate_table(dup)
    with pytest.raises(MetricError, match="lacks columns"):
        metrics.evaluate_table(df.drop(columns="domain"))
    no_target_normals = df[~((df.machine == "fan") & (df.domain == "target")
                             & (df.label == "normal"))]
    with pytest.raises(MetricError, match="'fan'.*target-domain normal"):
        metrics.evaluate_table(no_target_normals)


# ----------------------------------------------------------------- submission files

def test_submission_round_trip(tmp_path):
    names = [f"section_00_{i:04d}.wav" for i in range(7)]
    scores = np.array([0.1, -2.5, 1 / 3, 1e-17, 123456.789, 0.1, np.pi])
    decisions = [0, 1, 0, 0, 1, 0, 1]
    paths = metrics.write_submission(tmp_path, "ToyDrone", names, scores, decisions)
    assert paths["anomaly_score"].name == "anomaly_score_ToyDrone_section_00_test.csv"
    assert paths["decision_result"].name == "decision_result_ToyDrone_section_00_test.csv"
    lines = paths["anomaly_score"].read_text().splitlines()
    assert lines[0].startswith("section_00_0000.wav,") and len(lines) == 7   # no header
    assert paths["decision_result"].read_text().splitlines()[1] == "section_00_0001.wav,1"
    back = metrics.read_submission(tmp_path, "ToyDrone")
    assert back["name"].tolist() == names
    assert np.array_equal(back["score"].to_numpy(), scores)        # bit-exact
    assert back["decision"].tolist() == decisions
    assert not list(tmp_path.glob(".*tmp"))                         # no temporary left
    # without decisions only the score file is written
    only = metrics.write_submission(tmp_path / "b", "Sander", names, scores)
    assert list(only) == ["anomaly_score"]
    assert "decision" not in metrics.read_submission(tmp_path / "b", "Sander").columns
    with pytest.raises(SubmissionError, match="duplicated.*section_00_0000.wav"):
        metrics.write_submission(tmp_path, "x", names + names[:1], np.r_[scores, 0.0])
    with pytest.raises(MetricError, match="NaN"):
        metrics.write_submission(tmp_path, "x", names, np.r_[scores[:-1], np.nan])


def test_join_fails_with_names(tmp_path):
    machine = "ToothBrush"
    sub = metrics.read_submission(FIXTURES / "scores" / "sysA", machine)
    out = tmp_path / "sub"
    reference = metrics.evaluate_submission(FIXTURES / "scores" / "sysA", FIXTURES, [machine])

    metrics.write_submission(out, machine, sub["name"], sub["score"], sub["decision"])
    again = metrics.evaluate_submission(out, FIXTURES, [machine])
    assert again.loc[machine, "AUC_s"] == reference.loc[machine, "AUC_s"]

    # a missing clip
    metrics.write_submission(out, machine, sub["name"][1:], sub["score"][1:])
    (out / f"decision_result_{machine}_section_00_test.csv").unlink()
    with pytest.raises(SubmissionError, match=r"missing: " + sub["name"][0]):
        metrics.evaluate_submission(out, FIXTURES, [machine])

    # an extra clip
    names = list(sub["name"]) + ["section_00_9999.wav"]
    metrics.write_submission(out, machine, names, np.r_[sub["score"], 0.0])
    with pytest.raises(SubmissionError, match=r"extra.*section_00_9999\.wav"):
        metrics.evaluate_submission(out, FIXTURES, [machine])

    # a duplicated clip (written by hand: write_submission refuses duplicates)
    path = out / f"anomaly_score_{machine}_section_00_test.csv"
    text = "".join(f"{n},{s!r}\n" for n, s in zip(sub["name"], sub["score"]))
    path.write_text(text + f"{sub['name'][5]},0.5\n")
    with pytest.raises(SubmissionError, match=r"duplicated.*" + sub["name"][5]):
        metrics.evaluate_submission(out, FIXTURES, [machine])

    # a machine without ground truth, and a directory without submissions
    with pytest.raises(SubmissionError, match="not found"):
        metrics.evaluate_submission(out, FIXTURES, ["NoSuchMachine"])
    with pytest.raises(SubmissionError, match="no anomaly_score"):
        metrics.evaluate_submission(tmp_path / "empty", FIXTURES)


def test_fast_auc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from asdlib.metrics import fast_auc, fast_machine_metrics, machine_metrics

    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(10, 300))
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        y[0], y[1] = True, False
        s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))
        assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert fast_auc(y, s, 0.1) == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
        t = rng.random(n) < 0.5
        t[~y] = np.arange((~y).sum()) % 2 == 0
        ref = machine_metrics(y.astype(int), s, t.astype(int))
        assert fast_machine_metrics(y, s, t) == pytest.approx(
            (ref["auc_s"], ref["auc_t"], ref["pauc"]), abs=1e-12)


def test_sections_are_written_to_their_own_files(tmp_path):
    names = [f"section_{s}_{i:04d}.wav" for s in ("00", "01") for i in range(3)]
    fused = pd.DataFrame({"machine": "fan", "name": names, "score": np.arange(6.0),
                          "decision": [0, 1] * 3})
    paths = metrics.write_submissions(tmp_path, fused)
    assert sorted(p.name for p in paths) == [
        "anomaly_score_fan_section_00_test.csv", "anomaly_score_fan_section_01_test.csv",
        "decision_result_fan_section_00_test.csv", "decision_result_fan_section_01_test.csv"]
    for section in ("00", "01"):
        back = metrics.read_submission(tmp_path, "fan", section)
        assert back["name"].str.startswith(f"section_{section}_").all() and len(back) == 3
    with pytest.raises(metrics.SubmissionError, match="another section"):
        metrics.write_submission(tmp_path, "fan", names, np.arange(6.0))

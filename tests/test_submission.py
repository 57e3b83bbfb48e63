"""The submission validator: a correct submission passes, each fault is reported with a
message naming the file and the clips, all faults come in one call, and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asdlib.data import DatasetError
from asdlib.metrics import submission_paths, write_submissions
from asdlib.submission import SUBMISSION_FILE, main, validate_submission

#: Test clips of the fake evaluation data: valve has a second section.
CLIPS = {
    "fan": [f"section_00_{i:04d}.wav" for i in range(4)],
    "valve": [f"section_00_{i:04d}.wav" for i in range(3)] + ["section_01_0000.wav"],
}


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A DCASE data root with short stereo 16 kHz eval test clips (and one train clip)."""
    root = tmp_path / "data"
    for machine, names in CLIPS.items():
        machine_dir = root / "eval_data" / "raw" / machine
        (machine_dir / "test").mkdir(parents=True)
        (machine_dir / "train").mkdir()
        for name in names:
            sf.write(machine_dir / "test" / name, np.zeros((160, 2)), 16000, subtype="PCM_16")
        sf.write(machine_dir / "train" / "section_00_source_train_normal_0000.wav",
                 np.zeros((160, 2)), 16000, subtype="PCM_16")
    return root


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    """A correct submission of every machine and section, written by the project's writer."""
    rows = [{"machine": machine, "name": name, "score": 0.1 * i, "decision": i % 2}
            for machine, names in CLIPS.items() for i, name in enumerate(names)]
    out = tmp_path / "submission"
    write_submissions(out, pd.DataFrame(rows))
    return out


def score_file(submission: Path, machine: str = "fan", section: str = "00") -> Path:
    return submission_paths(submission, machine, section)[0]


def decision_file(submission: Path, machine: str = "fan", section: str = "00") -> Path:
    return submission_paths(submission, machine, section)[1]


def edit_lines(path: Path, edit) -> None:
    """Rewrite a file with ``edit(lines) -> lines`` (lines without newlines)."""
    path.write_text("".join(f"{line}\n" for line in edit(path.read_text().splitlines())))


def only_problem(submission: Path, data_root: Path) -> str:
    report = validate_submission(submission, data_root)
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def test_correct_submission_is_ok(submission, data_root):
    files = sorted(p.name for p in submission.iterdir())
    assert len(files) == 6 and all(SUBMISSION_FILE.match(f) for f in files)
    assert "anomaly_score_valve_section_01_test.csv" in files
    report = validate_submission(submission, data_root)
    assert report.ok and report.problems == []
    assert (report.machines, report.clips) == (2, 8)


def test_folder_of_machines_is_accepted(submission, data_root):
    report = validate_submission(submission, data_root / "eval_data" / "raw")
    assert report.ok and report.clips == 8


def test_machine_selection_ignores_other_machines(submission, data_root):
    for path in submission.glob("*_valve_*"):
        path.unlink()
    assert validate_submission(submission, data_root, machines=["fan"]).ok
    with pytest.raises(DatasetError, match="pump"):
        validate_submission(submission, data_root, machines=["pump"])


def test_missing_machine(submission, data_root):
    for path in submission.glob("*_fan_*"):
        path.unlink()
    problem = only_problem(submission, data_root)
    assert problem.startswith("machine fan: no submission files")
    assert "anomaly_score_fan_section_00_test.csv" in problem


def test_missing_section_file(submission, data_root):
    decision_file(submission, "valve", "01").unlink()
    problem = only_problem(submission, data_root)
    assert problem == ("decision_result_valve_section_01_test.csv: file missing "
                       "(valve section 01 has 1 test clip(s))")


def test_missing_clip(submission, data_root):
    for path in (score_file(submission), decision_file(submission)):
        edit_lines(path, lambda lines: [x for x in lines if not x.startswith("section_00_0002")])
    problems = validate_submission(submission, data_root).problems
    assert problems == [
        "anomaly_score_fan_section_00_test.csv: 1 of 4 test clip(s) missing: section_00_0002.wav",
        "decision_result_fan_section_00_test.csv: 1 of 4 test clip(s) missing: "
        "section_00_0002.wav"]


def test_extra_clip(submission, data_root):
    edit_lines(score_file(submission), lambda lines: lines + ["section_00_0099.wav,0.5"])
    problems = validate_submission(submission, data_root).problems
    assert ("anomaly_score_fan_section_00_test.csv: 1 clip(s) that are not test clips of this "
            "machine and section: section_00_0099.wav") in problems


def test_clip_of_another_section_is_extra(submission, data_root):
    edit_lines(score_file(submission, "valve", "00"),
               lambda lines: lines + ["section_01_0000.wav,1"])
    problems = validate_submission(submission, data_root).problems
    assert any(p.startswith("anomaly_score_valve_section_00_test.csv: 1 clip(s) that are not")
               and p.endswith("section_01_0000.wav") for p in problems)


def test_duplicated_clip(submission, data_root):
    edit_lines(score_file(submission), lambda lines: lines + [lines[1]])
    problem = only_problem(submission, data_root)
    assert problem == ("anomaly_score_fan_section_00_test.csv: 1 clip(s) listed more than "
                       "once: section_00_0001.wav (lines 2, 5)")


def test_header_row(submission, data_root):
    edit_lines(score_file(submission), lambda lines: ["file_name,anomaly_score"] + lines)
    problem = only_problem(submission, data_root)
    assert problem == ("anomaly_score_fan_section_00_test.csv: line 1 is a header "
                       "('file_name,anomaly_score'); submission files have no header")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "high", ""])
def test_score_not_a_finite_number(submission, data_root, value):
    edit_lines(score_file(submission), lambda lines: [lines[0], f"section_00_0001.wav,{value}"]
               + lines[2:])
    problem = only_problem(submission, data_root)
    assert problem == ("anomaly_score_fan_section_00_test.csv: 1 score(s) that are not finite "
                       f"numbers (non-numeric, NaN or inf): section_00_0001.wav ({value!r})")


@pytest.mark.parametrize("value", ["2", "0.5", "yes", "1.0"])
def test_decision_not_zero_or_one(submission, data_root, value):
    edit_lines(decision_file(submission),
               lambda lines: [f"section_00_0000.wav,{value}"] + lines[1:])
    problem = only_problem(submission, data_root)
    assert problem == ("decision_result_fan_section_00_test.csv: 1 decision(s) that are not 0 "
                       f"or 1: section_00_0000.wav ({value!r})")


def test_rows_of_three_columns(submission, data_root):
    edit_lines(score_file(submission), lambda lines: [lines[0] + ",extra"] + lines[1:])
    problem = only_problem(submission, data_root)
    assert problem == ("anomaly_score_fan_section_00_test.csv: rows must have exactly two "
                       "columns '<wav name>,<value>': line 1 (3 columns)")


def test_misnamed_file(submission, data_root):
    path = score_file(submission)
    path.rename(submission / "anomaly_score_fan_section_00.csv")
    (submission / "notes.csv").write_text("x\n")
    problems = validate_submission(submission, data_root).problems
    assert problems[0] == ("anomaly_score_fan_section_00_test.csv: file missing (fan section 00 "
                           "has 4 test clip(s))")
    assert problems[1].startswith("anomaly_score_fan_section_00.csv: stray or misnamed file")
    assert problems[1].endswith("did you mean anomaly_score_fan_section_00_test.csv?")
    assert problems[2].startswith("notes.csv: stray or misnamed file")
    assert "did you mean" not in problems[2]
    assert len(problems) == 3


def test_file_of_unknown_machine_or_section(submission, data_root):
    (submission / "anomaly_score_pump_section_00_test.csv").write_text("section_00_0000.wav,1\n")
    (submission / "anomaly_score_fan_section_01_test.csv").write_text("section_01_0000.wav,1\n")
    problems = validate_submission(submission, data_root).problems
    assert problems == [
        "anomaly_score_fan_section_01_test.csv: fan has no test clips of section 01 "
        "(sections: 00)",
        "anomaly_score_pump_section_00_test.csv: no test clips of machine 'pump' "
        "(machines: fan, valve)"]


def test_score_and_decision_files_disagree(submission, data_root):
    edit_lines(decision_file(submission), lambda lines: lines[:3])
    problems = validate_submission(submission, data_root).problems
    assert ("anomaly_score_fan_section_00_test.csv and decision_result_fan_section_00_test.csv "
            "list different clips: in the score file only: section_00_0003.wav; in the "
            "decision file only: -") in problems


def test_every_fault_is_reported_in_one_call(submission, data_root):
    edit_lines(score_file(submission), lambda lines: ["name,score", lines[0], lines[0],
                                                      "section_00_0001.wav,nan", lines[2]])
    edit_lines(decision_file(submission, "valve", "00"),
               lambda lines: [x[:-1] + "7" for x in lines])
    score_file(submission, "valve", "01").unlink()
    (submission / "decision_fan.csv").write_text("")
    problems = validate_submission(submission, data_root).problems
    expected_starts = [
        "anomaly_score_fan_section_00_test.csv: line 1 is a header",
        "anomaly_score_fan_section_00_test.csv: 1 score(s) that are not finite",
        "anomaly_score_fan_section_00_test.csv: 1 clip(s) listed more than once",
        "anomaly_score_fan_section_00_test.csv: 1 of 4 test clip(s) missing: section_00_0003.wav",
        "decision_result_valve_section_00_test.csv: 3 decision(s) that are not 0 or 1",
        "anomaly_score_valve_section_01_test.csv: file missing",
        "anomaly_score_fan_section_00_test.csv and decision_result_fan_section_00_test.csv "
        "list different clips: in the score file only: -; in the decision file only: "
        "section_00_0003.wav",
        "decision_fan.csv: stray or misnamed file",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert any(p.startswith(start) for p in problems), (start, problems)


def test_missing_submission_folder(tmp_path, data_root):
    problem = only_problem(tmp_path / "nowhere", data_root)
    assert problem.endswith("nowhere: submission folder does not exist")


def test_command_ok(submission, data_root, capsys):
    assert main([str(submission), str(data_root)]) == 0
    assert capsys.readouterr().out == "OK: 2 machines, 8 clips\n"
    assert main([str(submission), str(data_root), "--machines", "valve"]) == 0
    assert capsys.readouterr().out == "OK: 1 machines, 4 clips\n"


def test_command_reports_problems(submission, data_root, capsys):
    decision_file(submission).unlink()
    edit_lines(score_file(submission, "valve", "01"), lambda lines: ["section_01_0000.wav,x"])
    assert main([str(submission), str(data_root), "--dataset", "eval"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"2 problem(s) in {submission}:"
    assert out[1] == ("  - decision_result_fan_section_00_test.csv: file missing "
                      "(fan section 00 has 4 test clip(s))")
    assert out[2].startswith("  - anomaly_score_valve_section_01_test.csv: 1 score(s)")


def test_command_bad_data_root(submission, tmp_path, capsys):
    assert main([str(submission), str(tmp_path / "no_data")]) == 2
    assert "test data folder does not exist" in capsys.readouterr().err

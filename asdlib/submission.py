"""Check a DCASE Task 2 submission folder against the test clips, as the challenge would.

The official format (see :mod:`asdlib.metrics`) is, per machine and section, a headerless
``anomaly_score_<machine>_section_<nn>_test.csv`` and ``decision_result_..._test.csv``
with rows ``<wav name>,<value>``. A submission is rejected for a missing or misnamed file,
a missing, extra or repeated clip, a header, a row that is not two columns, a score that
is not a finite number or a decision that is not 0/1. This module reports every such
fault in one pass, one message each naming the file and the clips, so a submission can
be fixed in one go instead of one error at a time.

Command line: ``python -m asdlib.submission SUBMISSION_DIR DATA_ROOT [--dataset eval]
[--machines fan valve]`` (installed as ``asd-validate``).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from asdlib.data import DATASET_DIRS, DatasetError, list_machines, scan_machine
from asdlib.metrics import submission_paths

#: Name of any official submission file; groups ``kind``, ``machine``, ``section``.
SUBMISSION_FILE = re.compile(r"^(?P<kind>anomaly_score|decision_result)_(?P<machine>.+)"
                             r"_section_(?P<section>\d{2})_test\.csv$")
#: How many clip names a message lists before "... and N more".
NAMES_SHOWN = 8


@dataclass
class SubmissionReport:
    """Outcome of :func:`validate_submission`: the problems found and what was checked."""

    problems: list[str] = field(default_factory=list)
    machines: int = 0
    clips: int = 0

    @property
    def ok(self) -> bool:
        """True when the submission has no problem."""
        return not self.problems


def name_list(names) -> str:
    """``a, b, c`` for a message, cut after :data:`NAMES_SHOWN` names."""
    names = list(names)
    rest = len(names) - NAMES_SHOWN
    return ", ".join(map(str, names[:NAMES_SHOWN])) + (f" ... and {rest} more" if rest > 0 else "")


def machine_test_dirs(test_dir_or_root, dataset: str = "eval") -> dict[str, Path]:
    """Machine folders holding the test clips: ``<root>/<dataset>_data/raw/<machine>`` for a
    DCASE data root, else every ``<folder>/<machine>`` that has a ``test/`` folder."""
    root = Path(test_dir_or_root)
    raw_dir = root / DATASET_DIRS[dataset] / "raw"
    if raw_dir.is_dir():
        return {machine: raw_dir / machine for machine in list_machines(root, dataset)}
    if not root.is_dir():
        raise DatasetError(f"{root}: test data folder does not exist")
    found = {p.name: p for p in sorted(root.iterdir())
             if not p.name.startswith(".") and (p / "test").is_dir()}
    if not found:
        raise DatasetError(f"{root}: neither a DCASE data root (no {raw_dir.relative_to(root)}/) "
                           "nor a folder of <machine>/test/ folders")
    return found


def expected_clips(test_dir_or_root, machines=None,
                   dataset: str = "eval") -> dict[str, dict[str, list[str]]]:
    """Test clip names per machine and section: ``{machine: {"00": [names...]}}``, sorted."""
    folders = machine_test_dirs(test_dir_or_root, dataset)
    if isinstance(machines, str):
        machines = [machines]
    unknown = [m for m in machines or () if m not in folders]
    if unknown:
        raise DatasetError(f"no test clips of machine(s) {unknown} under {test_dir_or_root}; "
                           f"available: {', '.join(folders)}")
    clips = {}
    for machine in machines or folders:
        table = scan_machine(folders[machine], dataset, require_labels=False, splits=("test",))
        clips[machine] = {section: sorted(rows["name"])
                          for section, rows in table.groupby("section", sort=True)}
    return clips


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows of a file as ``(line number, stripped fields)``."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return [(number, [cell.strip() for cell in row])
                for number, row in enumerate(csv.reader(handle), start=1)
                if any(cell.strip() for cell in row)]


def is_number(text: str) -> bool:
    """True when ``text`` parses as a float (NaN and inf included)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_file(path: Path, clips: list[str], decisions: bool) -> tuple[list[str], set[str]]:
    """Problems of one score (or decision) file against its section's clips; also the set
    of clip names it lists."""
    problems, where = [], path.name
    rows = read_rows(path)
    wanted = set(clips)
    if rows and rows[0][1][0] not in wanted and not is_number((rows[0][1] + [""])[1]):
        problems.append(f"{where}: line {rows[0][0]} is a header ({','.join(rows[0][1])!r}); "
                        "submission files have no header")
        rows = rows[1:]
    lines_of = defaultdict(list)
    wrong_width, bad_values = [], []
    for number, cells in rows:
        lines_of[cells[0]].append(number)
        if len(cells) != 2:
            wrong_width.append(f"line {number} ({len(cells)} columns)")
        value = cells[1] if len(cells) > 1 else ""
        finite = is_number(value) and math.isfinite(float(value))
        if not (value in ("0", "1") if decisions else finite):
            bad_values.append(f"{cells[0]} ({value!r})")
    if wrong_width:
        problems.append(f"{where}: rows must have exactly two columns '<wav name>,<value>': "
                        f"{name_list(wrong_width)}")
    if bad_values:
        what = "decision(s) that are not 0 or 1" if decisions else \
            "score(s) that are not finite numbers (non-numeric, NaN or inf)"
        problems.append(f"{where}: {len(bad_values)} {what}: {name_list(bad_values)}")
    repeated = [f"{n} (lines {', '.join(map(str, lines))})"
                for n, lines in sorted(lines_of.items()) if len(lines) > 1]
    if repeated:
        problems.append(f"{where}: {len(repeated)} clip(s) listed more than once: "
                        f"{name_list(repeated)}")
    missing = [n for n in clips if n not in lines_of]
    if missing:
        problems.append(f"{where}: {len(missing)} of {len(clips)} test clip(s) missing: "
                        f"{name_list(missing)}")
    extra = sorted(n for n in lines_of if n not in wanted)
    if extra:
        problems.append(f"{where}: {len(extra)} clip(s) that are not test clips of this "
                        f"machine and section: {name_list(extra)}")
    return problems, set(lines_of)


def check_section(submission_dir: Path, machine: str, section: str,
                  clips: list[str]) -> list[str]:
    """Problems of the score and decision files of one machine and section."""
    problems, listed = [], {}
    for path, decisions in zip(submission_paths(submission_dir, machine, section), (False, True)):
        if not path.is_file():
            problems.append(f"{path.name}: file missing ({machine} section {section} has "
                            f"{len(clips)} test clip(s))")
            continue
        file_problems, listed[path.name] = check_file(path, clips, decisions)
        problems += file_problems
    if len(listed) == 2:
        (score_name, in_score), (decision_name, in_decision) = listed.items()
        only_score, only_decision = sorted(in_score - in_decision), sorted(in_decision - in_score)
        if only_score or only_decision:
            problems.append(
                f"{score_name} and {decision_name} list different clips: in the score file "
                f"only: {name_list(only_score) or '-'}; in the decision file only: "
                f"{name_list(only_decision) or '-'}")
    return problems


def stray_files(submission_dir: Path, expected: dict[str, dict[str, list[str]]],
                expected_names: set[str], machines_selected: bool) -> list[str]:
    """Problems for csv files that are not one of the expected submission files."""
    problems = []
    for path in sorted(submission_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() != ".csv" or path.name in expected_names:
            continue
        match = SUBMISSION_FILE.match(path.name)
        if match and match["machine"] in expected:
            sections = ", ".join(expected[match["machine"]])
            problems.append(f"{path.name}: {match['machine']} has no test clips of section "
                            f"{match['section']} (sections: {sections})")
        elif match and not machines_selected:
            problems.append(f"{path.name}: no test clips of machine {match['machine']!r} "
                            f"(machines: {', '.join(expected)})")
        elif not match:
            absent = sorted(n for n in expected_names if not (submission_dir / n).is_file())
            guess = difflib.get_close_matches(path.name, absent, n=1, cutoff=0.6)
            hint = f"; did you mean {guess[0]}?" if guess else ""
            problems.append(f"{path.name}: stray or misnamed file; names must be "
                            "anomaly_score_<machine>_section_<nn>_test.csv or "
                            f"decision_result_<machine>_section_<nn>_test.csv{hint}")
    return problems


def validate_submission(submission_dir, test_dir_or_root, machines=None,
                        dataset: str = "eval") -> SubmissionReport:
    """Check a submission folder against the test clips and report every fault at once.

    ``test_dir_or_root``: a DCASE data root (clips from ``<root>/<dataset>_data/raw/
    <machine>/test/``) or a folder of ``<machine>/test/`` folders. ``machines``: the
    machines to check (default: all; files of other machines are then ignored). Raises
    :class:`asdlib.data.DatasetError` when the test data itself cannot be read.
    """
    expected = expected_clips(test_dir_or_root, machines, dataset)
    submission_dir = Path(submission_dir)
    report = SubmissionReport(machines=len(expected),
                              clips=sum(len(c) for s in expected.values() for c in s.values()))
    if not submission_dir.is_dir():
        report.problems.append(f"{submission_dir}: submission folder does not exist")
        return report
    expected_names = set()
    for machine, sections in expected.items():
        paths = [path for section in sections
                 for path in submission_paths(submission_dir, machine, section)]
        expected_names.update(p.name for p in paths)
        if not any(p.is_file() for p in paths):
            report.problems.append(f"machine {machine}: no submission files (expected "
                                   f"{name_list(p.name for p in paths)})")
            continue
        for section, clips in sections.items():
            report.problems += check_section(submission_dir, machine, section, clips)
    report.problems += stray_files(submission_dir, expected, expected_names, machines is not None)
    return report


def describe_run(run) -> str:
    """What a pipeline run's 06_fusion wrote, one line per system: its submission folder,
    the number of files, and the validation against the run's own test clips."""
    folder = run.dir / "06_fusion" / "submission"
    if not folder.is_dir():
        return f"{folder}: no submission written"
    root = run.config.resolved_data_root()
    lines = []
    for system in sorted(p for p in folder.iterdir() if p.is_dir()):
        report = validate_submission(system, root, machines=run.config.machines,
                                     dataset=run.config.dataset)
        files = len(list(system.glob("*.csv")))
        verdict = "valid" if report.ok else f"{len(report.problems)} problem(s): " + \
            "; ".join(report.problems[:3])
        lines.append(f"{system.name}: {files} files, {report.machines} machines, "
                     f"{report.clips} clips, {verdict}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Console entry point: print "OK: ..." (exit 0) or the problems (exit 1)."""
    parser = argparse.ArgumentParser(
        prog="asd-validate", description="Check a DCASE Task 2 submission folder against the "
        "test clips (DCASE data root or folder of <machine>/test/).")
    parser.add_argument("submission_dir", help="folder of anomaly_score_/decision_result_ csvs")
    parser.add_argument("data_root", help="DCASE data root or folder of <machine>/test/ folders")
    parser.add_argument("--dataset", choices=sorted(DATASET_DIRS), default="eval")
    parser.add_argument("--machines", nargs="+", help="machines to check (default: all)")
    args = parser.parse_args(argv)
    machines = ([m for item in args.machines for m in item.split(",") if m]
                if args.machines else None)
    try:
        report = validate_submission(args.submission_dir, args.data_root, machines, args.dataset)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.ok:
        print(f"OK: {report.machines} machines, {report.clips} clips")
        return 0
    print(f"{len(report.problems)} problem(s) in {args.submission_dir}:")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())

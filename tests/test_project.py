"""Project wiring: dependencies in one place, paired notebooks, parameters cells, CI."""

import re
import tomllib
from pathlib import Path

import jupytext
import pytest

from asdlib.experiment import STEPS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_project_from_pyproject():
    text = (ROOT / "environment.yml").read_text()
    py = re.search(r"-\s*python\s*=\s*([\d.]+)", text)
    assert py, "environment.yml must pin python"
    required = _pyproject()["project"]["requires-python"]
    lo = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", required).group(1).split("."))
    assert tuple(int(x) for x in py.group(1).split("."))[:2] >= lo[:2]
    # the pip section installs this project with the dev extra, so pyproject stays the
    # single list of dependencies
    assert re.search(r"-\s*-e\s+\.\[dev\]", text)
    assert "torch" not in text.split("pip:")[1], "dependencies belong in pyproject.toml"


def test_torch_pair_pinned_together():
    deps = _pyproject()["project"]["dependencies"]
    torch = next(d for d in deps if d.startswith("torch>") or d.startswith("torch="))
    audio = next(d for d in deps if d.startswith("torchaudio"))
    assert "2.14" in torch and "<2.15" in torch
    assert "2.11" in audio and "<2.12" in audio


def test_every_step_has_a_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(STEPS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pair_in_sync_and_parameterised(path):
    py = jupytext.read(path)
    ipynb_path = path.with_suffix(".ipynb")
    assert ipynb_path.exists(), f"{ipynb_path.name} missing: run `make sync`"
    nb = jupytext.read(ipynb_path)
    src_py = [c.source for c in py.cells if c.cell_type == "code"]
    src_nb = [c.source for c in nb.cells if c.cell_type == "code"]
    assert src_py == src_nb, f"{path.name} and its .ipynb differ: run `make sync`"
    for book in (py, nb):
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill)"
        assert "run_dir" in tagged[0].source
    assert py.metadata["kernelspec"]["name"] == "asdlib"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme


def test_tests_never_skip_a_broken_import_of_the_project():
    """A broken asdlib import must fail the suite, not skip tests."""
    offenders = [p.name for p in (ROOT / "tests").glob("*.py")
                 if re.search(r"importorskip\(\s*['\"]asdlib", p.read_text())]
    assert not offenders

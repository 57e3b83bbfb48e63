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


def _asdlib_sources():
    return sorted((ROOT / "asdlib").rglob("*.py"))


def test_no_import_cycle_in_asdlib():
    """The import graph of asdlib (every import statement, lazy ones inside functions too)
    has no cycle."""
    from asdlib import fingerprint

    graph = {m: fingerprint.direct_imports(m) - {m} for m in _asdlib_sources()}
    state: dict = {}
    cycles = []

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(p.relative_to(ROOT).as_posix()
                                          for p in path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_private_name_is_used_outside_its_module():
    """``from asdlib.x import _y`` and ``x._y`` on an asdlib module are not used across
    modules (benchmarks, scripts and the package itself)."""
    import ast

    offenders = []
    files = _asdlib_sources() + sorted((ROOT / "benchmarks").glob("*.py")) + \
        sorted((ROOT / "scripts").glob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asdlib"):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
                modules |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names
                            if a.name.startswith("asdlib")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offenders, offenders


def _update_readme():
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme",
                                                  ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_numbers_are_those_of_the_committed_results():
    """Every number in the README's result blocks is rendered from results/demo and
    results/heldout; a results change without `scripts/update_readme.py` fails here."""
    update_readme = _update_readme()
    text = (ROOT / "README.md").read_text()
    assert update_readme.render(text) == text, "run .venv/bin/python scripts/update_readme.py"
    for name in update_readme.BLOCKS:
        block = text.split(f"<!-- results:{name} -->")[1].split(f"<!-- /results:{name} -->")[0]
        assert re.search(r"\d+\.\d", block), f"README block {name} is empty"


def test_readme_check_catches_a_stale_number(tmp_path, monkeypatch):
    update_readme = _update_readme()
    text = (ROOT / "README.md").read_text()
    rendered = update_readme.render(text)
    stale = re.sub(r"(<!-- results:heldout -->.*?)(\d+)\.(\d)",
                   lambda m: f"{m.group(1)}{int(m.group(2)) + 1}.{m.group(3)}",
                   rendered, count=1, flags=re.DOTALL)
    assert stale != rendered
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    monkeypatch.setattr(update_readme, "README", readme)
    assert update_readme.main(["--check"]) == 1
    assert update_readme.main([]) == 0 and update_readme.main(["--check"]) == 0
    assert readme.read_text() == rendered

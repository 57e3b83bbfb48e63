"""The explorer notebook (notebooks/08_explore) in a real browser: headless Chromium drives
JupyterLab and the classic notebook front end (nbclassic).

A notebook server (localhost, a free port, a token) serves a temporary folder holding a
run and the notebook parameterised for it (``run_dir=".."``, as the pipeline runs it).
Chromium opens the notebook, runs every cell, changes the machine, picks the worst false
alarm, and the test asserts what the page renders: the distribution image (redrawn on
each change), two audio players that load their wav, the spectrogram under the
localisation maps, the clip's score table, the static metrics table.

The run is a small fake one (`test_explore.write_fake_run`) unless ``ASDLIB_EXPLORE_RUN``
names a finished run folder (its tables are copied, its audio read in place).
Screenshots go to ``ASDLIB_SCREENSHOTS`` (or the test's tmp_path); the README's pictures:

    ASDLIB_EXPLORE_RUN=results/demo ASDLIB_SCREENSHOTS=docs/screenshots \\
        .venv/bin/python -m pytest -p no:cacheprovider tests/browser -k jupyterlab

Needs Debian's chromium and chromedriver (``apt-get install -y chromium chromium-driver``)
and the dev packages jupyterlab, nbclassic and selenium; skipped only when chromium is absent.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from test_explore import write_fake_run

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1500,2600")
#: What a run's explorer reads (copied from ASDLIB_EXPLORE_RUN).
RUN_PARTS = ("config.json", "00_data", "03_subband", "04_patch", "05_ldn", "06_fusion")
#: JupyterLab settings: every cell attached to the page (element screenshots), no news.
LAB_SETTINGS = {"notebook-extension/tracker": {"windowingMode": "none"},
                "apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False}}
STARTUP_S, KERNEL_S, RENDER_S = 90, 120, 120
#: JavaScript: what the page shows, for a failure message (dialogs, kernel indicator, title).
PAGE_STATE = """
const texts = s => Array.from(document.querySelectorAll(s)).map(e => e.innerText.slice(0, 300));
return {title: document.title, dialogs: texts('.modal-dialog, .jp-Dialog'),
        kernel: texts('#kernel_indicator, .jp-KernelStatus, .jp-Toolbar-kernelStatus'),
        jupyter: typeof window.Jupyter, lab: typeof window.jupyterapp};"""
#: Error and stderr outputs of JupyterLab and of the classic notebook (shown on a timeout).
ERROR_OUTPUTS = (".jp-OutputArea-output[data-mime-type*='stderr'], "
                 ".jp-OutputArea-output[data-mime-type*='error'], .output_stderr, .output_error")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="chromium/chromedriver not found at /usr/bin: install them "
                              "with `apt-get install -y chromium chromium-driver`"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_folder(root: Path) -> Path:
    """``root/results/<run>/`` with the run's tables and ``notebooks/08_explore.ipynb``
    parameterised as the pipeline does; returns the notebook's path."""
    source = os.environ.get("ASDLIB_EXPLORE_RUN")
    if source:
        run_dir = root / "results" / Path(source).resolve().name
        run_dir.mkdir(parents=True)
        for part in RUN_PARTS:
            src = Path(source) / part
            copy = shutil.copytree if src.is_dir() else shutil.copy
            copy(src, run_dir / part)
    else:
        run_dir = write_fake_run(root / "results")
    nb = load_notebook_node(str(ROOT / "notebooks" / "08_explore.ipynb"))
    nb = parameterize_notebook(nb, {"run_dir": ".."})
    path = run_dir / "notebooks" / "08_explore.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return path


@dataclass(frozen=True)
class FrontEnd:
    """How a notebook front end is served, opened and told to run every cell."""

    module: str  # python -m <module> starts its server
    options: tuple[str, ...]  # beyond the common ServerApp options
    url: str  # path of a notebook page, {path} relative to the root folder
    kernel_idle: str  # JavaScript: true once the notebook's kernel is idle
    run_all: str  # JavaScript: run every cell


APP = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
FRONT_ENDS = {
    "jupyterlab": FrontEnd(
        "jupyterlab", ("--LabApp.expose_app_in_browser=True",
                       "--LabApp.user_settings_dir={settings}",
                       "--LabApp.workspaces_dir={tmp}/workspaces"),
        "lab/tree/{path}",
        f"const w = {APP}; const s = w && w.sessionContext && w.sessionContext.session;"
        "return !!(s && s.kernel && s.kernel.status === 'idle');",
        "window.jupyterapp.commands.execute('notebook:run-all-cells');"),
    "classic": FrontEnd(
        "nbclassic", (), "nbclassic/notebooks/{path}",
        "const n = window.Jupyter && Jupyter.notebook; return !!(n && n.kernel && "
        "n.kernel.is_connected() && document.querySelector('#kernel_indicator_icon"
        ".kernel_idle_icon'));",
        "Jupyter.notebook.execute_all_cells();"),
}


@pytest.fixture(params=list(FRONT_ENDS))
def server(request, tmp_path):
    """A notebook server of one front end over a temporary folder holding the run and the
    notebook: yields (front end name, notebook page url, server log path)."""
    front = FRONT_ENDS[request.param]
    notebook = lab_folder(tmp_path / "root")
    settings = tmp_path / "settings"
    for name, values in LAB_SETTINGS.items():
        plugin = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
        plugin.parent.mkdir(parents=True, exist_ok=True)
        plugin.write_text(json.dumps(values))
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log_path = tmp_path / f"{front.module}.log"
    options = [o.format(settings=settings, tmp=tmp_path) for o in front.options]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", front.module, "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={tmp_path / 'root'}", *options],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + STARTUP_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"{front.module} did not start:\n"
                                + log_path.read_text()[-3000:])
                time.sleep(0.5)
        path = notebook.relative_to(tmp_path / "root").as_posix()
        yield request.param, f"{base}/{front.url.format(path=path)}?token={token}", log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def chromium(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'chromium'}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("ASDLIB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(driver, what: str, timeout: float, condition):
    """``condition(driver)`` once it is truthy; fails naming ``what`` after ``timeout`` s."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except Exception as exc:
        errors = driver.find_elements(By.CSS_SELECTOR, ERROR_OUTPUTS)
        pytest.fail(f"timed out after {timeout} s waiting for {what} ({type(exc).__name__}); "
                    f"error outputs: {[e.text[-1500:] for e in errors]}")


#: JavaScript: the Output widgets under arguments[0], outermost only (JupyterLab marks them
#: widget-output, the classic notebook jupyter-widgets-output-area).
OUTERMOST_OUTPUTS = """
const all = Array.from(arguments[0].querySelectorAll(
    '.widget-output, .jupyter-widgets-output-area'));
return all.filter(e => !all.some(o => o !== e && o.contains(e)));"""


def explorer_parts(driver) -> dict:
    """The explorer's controls and outputs on the page (None where not rendered yet)."""
    panels = driver.find_elements(By.CSS_SELECTOR, ".widget-vbox")  # the outermost first
    if not panels:
        return {}
    panel = panels[0]
    dropdowns = {e.find_element(By.TAG_NAME, "label").text: e.find_element(By.TAG_NAME, "select")
                 for e in panel.find_elements(By.CSS_SELECTOR, ".widget-dropdown")}
    outputs = driver.execute_script(OUTERMOST_OUTPUTS, panel)
    listbox = panel.find_elements(By.CSS_SELECTOR, ".widget-select select")
    html = panel.find_elements(By.CSS_SELECTOR, ".widget-html")
    if len(outputs) < 2 or not listbox or len(html) < 2:
        return {}
    return {"panel": panel, "dropdowns": dropdowns, "plot": outputs[0], "clip_view": outputs[1],
            "clips": listbox[0], "summary": html[0], "clip_table": html[1]}


def loaded_images(element) -> list:
    return [img for img in element.find_elements(By.TAG_NAME, "img")
            if img.get_property("naturalWidth") > 0]


def save_screenshot(element, path: Path) -> None:
    """PNG of ``element`` as shown, in 256 colours (a third of the size: committed ones)."""
    from PIL import Image

    image = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def plot_source(driver) -> str | None:
    images = loaded_images(explorer_parts(driver)["plot"])
    return images[0].get_attribute("src") if images else None


def open_with_idle_kernel(driver, url: str, front: FrontEnd, server_log: Path) -> None:
    """Opens the notebook page until its kernel is idle: a page whose kernel has not
    connected after KERNEL_S is loaded once more (a slow first kernel start can leave the
    page's first connection attempt behind); fails with what the page and server show."""
    states = []
    for attempt in range(2):
        driver.get(url)
        try:
            WebDriverWait(driver, KERNEL_S, poll_frequency=0.5).until(
                lambda d: d.execute_script(front.kernel_idle))
            return
        except Exception as exc:
            states.append(f"attempt {attempt + 1}: {type(exc).__name__}, page "
                          f"{driver.execute_script(PAGE_STATE)}")
    pytest.fail(f"the notebook's kernel in {front.module} was not idle after "
                f"2 x {KERNEL_S} s; {'; '.join(states)}; server log:\n"
                + server_log.read_text()[-3000:])


def test_explorer_notebook_in_a_browser(server, chromium, screenshots):
    front_end, url, server_log = server
    front, driver = FRONT_ENDS[front_end], chromium
    shot = {name: screenshots / (name if front_end == "jupyterlab" else f"{front_end}_{name}")
            for name in ("explorer_distributions.png", "explorer_clip.png", "explorer_panel.png")}
    open_with_idle_kernel(driver, url, front, server_log)
    driver.execute_script(front.run_all)

    parts = wait_for(driver, "the explorer widget with its distribution plot", RENDER_S,
                     lambda d: (p := explorer_parts(d)) and loaded_images(p["plot"]) and p)
    assert "AUC_s" in parts["summary"].text and "pAUC" in parts["summary"].text
    assert "Error displaying widget" not in parts["panel"].text
    assert not parts["clip_view"].find_elements(By.TAG_NAME, "audio")
    assert set(parts["dropdowns"]) >= {"run", "machine", "system / branch"}
    static = wait_for(driver, "the static metrics table", RENDER_S, lambda d: [
        e for e in d.find_elements(By.TAG_NAME, "pre")
        if "AUC_t" in e.text and "false alarms" in e.text])
    assert "System 4" in static[0].text

    machines = Select(parts["dropdowns"]["machine"])
    first = machines.first_selected_option.text
    second = next(o.text for o in machines.options if o.text != first)
    first_plot = plot_source(driver)
    machines.select_by_visible_text(second)
    wait_for(driver, f"the summary and distribution of {second}", RENDER_S,
             lambda d: explorer_parts(d)["summary"].text.startswith(f"{second} ·")
             and plot_source(d) not in (None, first_plot))
    parts = explorer_parts(driver)
    driver.execute_script("arguments[0].scrollIntoView()", parts["panel"])
    save_screenshot(parts["panel"], shot["explorer_distributions.png"])

    clips = Select(parts["clips"])
    worst = clips.options[0].text
    assert worst.startswith("false alarm")
    plot_before = plot_source(driver)
    clips.select_by_index(0)
    name = worst.split()[-1]
    wait_for(driver, "the picked clip's audio players, spectrogram and scores", RENDER_S,
             lambda d: len((p := explorer_parts(d))["clip_view"].find_elements(
                 By.TAG_NAME, "audio")) == 2 and loaded_images(p["clip_view"])
             and name in p["clip_table"].text)
    parts = explorer_parts(driver)
    view, table = parts["clip_view"], parts["clip_table"]
    assert name in view.text and "fine_selective" in table.text  # score in every branch
    players = view.find_elements(By.TAG_NAME, "audio")
    for player in players:
        source = player.find_element(By.TAG_NAME, "source").get_attribute("src")
        assert source.startswith("data:audio/wav;base64,")
    durations = wait_for(driver, "the audio players to load their wav", 30, lambda d: all(
        p.get_property("readyState") >= 1 for p in players) and [
        p.get_property("duration") for p in players])
    assert durations[0] > 0 and durations[0] == pytest.approx(durations[1])  # near, far
    spectrogram = loaded_images(view)[0]
    size = (spectrogram.get_property("naturalWidth"), spectrogram.get_property("naturalHeight"))
    assert size[0] > 300 and size[1] > 150  # two map rows over the spectrogram
    wait_for(driver, "the distribution redrawn with the clip starred", RENDER_S,
             lambda d: plot_source(d) not in (None, plot_before))

    clip_row = view.find_element(By.XPATH, "..")
    driver.execute_script("arguments[0].scrollIntoView()", clip_row)
    save_screenshot(clip_row, shot["explorer_clip.png"])
    driver.execute_script("arguments[0].scrollIntoView()", parts["panel"])
    save_screenshot(parts["panel"], shot["explorer_panel.png"])
    assert all(path.stat().st_size > 10_000 for path in shot.values())

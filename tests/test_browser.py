"""Notebook 02's VQA demo and notebook 05's film player in a real JupyterLab, driven through Debian's Chromium
by Playwright.

What a workshop participant does: open notebook 02, Run All, pick a picture, ask, read the answer in the
widget; then upload a picture of their own through the file chooser and ask about it. The notebook runs on
the offline profile, whose toy scenes have known answers, so the answers are checked, not just seen. In
notebook 05, Run All, then scrub the film: type a frame into the slider's readout, switch to stage 2.
Screenshots go to build/browser/. Playwright's own browser download needs the network, so it drives the
system's Chromium (`apt-get install chromium`, which `.ci/run` does). Without a browser the test is skipped,
except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.demos import demo_inputs
from helpers.offline import weights_dir
from helpers.toyworld import film
from helpers.toyworld.samples import toy_samples

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "02_vqa_and_instructed_generation.ipynb"
FILM_NOTEBOOK = "05_two_stage_pretraining.ipynb"
SCREENSHOTS = ROOT / "build" / "browser"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
"""Debian's Chromium first; GitHub's Ubuntu runners ship Google Chrome instead."""
STARTUP_SECONDS = 60
SETTINGS = {
    # Render every cell: with windowing, cells out of view (the demo, at the end) are not laid out.
    # ... and start the notebook's own kernel (python3) without asking.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}
RUN_ALL_MS = 90_000
ANSWER_MS = 30_000


def _browser() -> str:
    found = os.environ.get("BLIP2_BROWSER") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    message = f"no Chromium ({', '.join(BROWSERS)}): apt-get install -y chromium, or set BLIP2_BROWSER"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Callable[[str], str]]:
    """JupyterLab on loopback, serving copies of the notebooks (the repository's stay clean), offline profile;
    yields the URL of a notebook by name."""
    pytest.importorskip("jupyterlab")
    widgets = pytest.importorskip("ipywidgets")
    if int(widgets.__version__.split(".")[0]) < 8:
        # ipywidgets 7's front end (jupyterlab_widgets 1) serves JupyterLab 3 only: in JupyterLab 4 no widget
        # renders. Colab's ipywidgets 7.7.1 renders in Colab's own front end; a fresh `make lab` venv gets ipywidgets 8.
        pytest.skip(
            f"ipywidgets {widgets.__version__} renders in Colab, not in JupyterLab 4 (needs ipywidgets 8)"
        )
    root = tmp_path_factory.mktemp("lab")
    for name in (NOTEBOOK, FILM_NOTEBOOK):
        shutil.copy(ROOT / "notebooks" / name, root / name)
    settings = tmp_path_factory.mktemp("lab-settings")
    for plugin, values in SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    environment = os.environ | {"BLIP2_PROFILE": "offline", "OMP_NUM_THREADS": "1", "JUPYTER_NO_CONFIG": "1"}
    environment.pop("MPLBACKEND", None)  # conftest's Agg would leave the kernel's figures as text reprs
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        "--LabApp.news_url=",
        "--allow-root",  # containers and CI often run as root
    ]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        # each notebook in a workspace of its own: a restored tab of the other would hide this one's cells
        yield lambda name: f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?token={token}&reset"
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def _ask(page, question: str) -> str:
    """Type the question, press Ask, and return the answer the widget shows for it."""
    page.locator(".widget-text input[type='text']").first.fill(question)
    page.locator("button", has_text="Ask").first.click()
    transcript = page.locator(".widget-html", has_text=f"Q: {question}").first
    transcript.wait_for(timeout=ANSWER_MS)
    text = transcript.inner_text()
    return text.split("A:", 1)[1].split("\n", 1)[0].strip()


def _run_all(page, url: str) -> None:
    """Open a notebook in JupyterLab and Run All once its kernel is connected."""
    page.goto(url)
    page.locator(".jp-Notebook").first.wait_for(timeout=STARTUP_SECONDS * 1000)
    # The kernel is connected once the status bar names it as idle; Run All before that runs nothing.
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=STARTUP_SECONDS * 1000)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator("li[data-command='runmenu:run-all']").first.click()
    page.locator(".jp-InputPrompt", has_text="[1]:").first.wait_for(timeout=STARTUP_SECONDS * 1000)


def test_vqa_demo_answers_in_jupyterlab(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "02_failure.png").unlink(missing_ok=True)  # a failure screenshot must be this run's
    demo = demo_inputs("offline", count=3)
    scenes = toy_samples(6)
    picked = demo.images[1]
    truth = next(scene for scene in scenes if scene.image.tobytes() == picked.image.tobytes())
    uploaded = scenes[5]
    shown = {image.image.tobytes() for image in demo.images}
    assert uploaded.image.tobytes() not in shown, "the upload must be a scene the dropdown does not offer"
    asked = [truth.questions[0].question, *(qa.question for qa in uploaded.questions[:2])]
    assert len(set(asked)) == len(asked), "each question differs, so each answer is told apart from the last"
    upload_path = tmp_path / "my_scene.png"
    uploaded.image.save(upload_path)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _run_all(page, lab(NOTEBOOK))
            ask = page.locator("button", has_text="Ask").first
            ask.wait_for(state="attached", timeout=RUN_ALL_MS)
            ask.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / "02_demo_ready.png"))

            page.locator(".widget-dropdown select").first.select_option(label=picked.label)
            question = truth.questions[0]
            assert _ask(page, question.question) == question.answer
            page.screenshot(path=str(SCREENSHOTS / "02_demo_answer.png"))

            with page.expect_file_chooser() as chooser:
                page.locator(".widget-upload").first.click()
            chooser.value.set_files(str(upload_path))
            page.locator(".widget-html", has_text="my_scene.png").first.wait_for(timeout=ANSWER_MS)
            for question in uploaded.questions[:2]:
                assert _ask(page, question.question) == question.answer
            page.screenshot(path=str(SCREENSHOTS / "02_demo_upload.png"))
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "02_failure.png"))  # what the browser showed, for CI logs
            raise
        finally:
            browser.close()


def test_film_player_scrubs_in_jupyterlab(lab):
    """The slider, typed into as a learner would, shows the chosen step of the shipped film, and the stage
    buttons switch films. The picture must change with each move: the kernel redrew it, not only the label."""
    sync_api = pytest.importorskip("playwright.sync_api")
    shipped = film.load_films(weights_dir())
    executable = _browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "05_failure.png").unlink(missing_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _run_all(page, lab(FILM_NOTEBOOK))
            # the film player is the notebook's only box with stage buttons
            player = page.locator(".widget-vbox", has=page.locator(".widget-toggle-buttons")).last
            player.wait_for(timeout=RUN_ALL_MS)
            player.locator(".widget-label", has_text=f"step 0 of {shipped[1].steps[-1]}").wait_for()
            player.scroll_into_view_if_needed()
            picture = player.locator("img").first

            def expect(label: str, shown: str | None) -> str:
                """Wait for the label, then for a picture other than `shown`; return the new picture."""
                player.locator(".widget-label", has_text=label).wait_for(timeout=ANSWER_MS)
                page.wait_for_function(
                    "([img, old]) => img.getAttribute('src') !== old", arg=[picture.element_handle(), shown]
                )
                return picture.get_attribute("src")

            first = picture.get_attribute("src")
            frame = 11
            player.locator(".widget-readout").first.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(str(frame))
            page.keyboard.press("Enter")
            moved = expect(f"step {shipped[1].steps[frame]} of {shipped[1].steps[-1]}", first)
            page.screenshot(path=str(SCREENSHOTS / "05_film_frame.png"))
            player.locator("button", has_text="stage 2").first.click()
            expect(f"step 0 of {shipped[2].steps[-1]}", moved)
            page.screenshot(path=str(SCREENSHOTS / "05_film_stage2.png"))
            strip = page.locator(".jp-CodeCell", has_text="film_viz.filmstrip(").locator(".jp-OutputArea img")
            strip.first.wait_for(timeout=ANSWER_MS)  # the static copy, drawn as a picture
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "05_failure.png"))
            raise
        finally:
            browser.close()

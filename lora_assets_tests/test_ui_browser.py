"""The Dagster UI in a real browser: `dagster dev` on 127.0.0.1 with a temporary DAGSTER_HOME,
headless Debian Chromium driven by Playwright, one subject's partition launched from the asset
page, and the metadata (counts, contact sheet) checked on that page. The screenshot is saved to
`test-artifacts/`. Skipped where Chromium or Playwright is missing, except in CI (`CI=true`),
where `.ci/run` installs both and a skip would hide a broken UI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from lora_assets_tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _requirements_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None if Path(CHROMIUM).exists() else f"no chromium at {CHROMIUM}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`dagster dev` over a copy of the sample subject; yields (base URL, DAGSTER_HOME)."""
    missing = _requirements_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run must install it")
        pytest.skip(missing)
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home)
    shutil.copytree(REPO / "data" / "subjects" / "sample", data / "subjects" / "sample")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LORA_ASSETS_DATA_ROOT": str(data)}
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "lora-assets", "subjects", "sync"], env=env, check=True)
    port = _free_port()
    log = (tmp_path / "dagster-dev.log").open("w")
    server = subprocess.Popen(
        [bin_dir / "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-m", "lora_assets.definitions"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "dagster-dev.log"
                ).read_text()[-3000:]
                time.sleep(1)
        yield url, home
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def _wait_for_run(home: Path, prefix: str, timeout: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            runs = [r for r in instance.get_runs(limit=20) if r.run_id.startswith(prefix)]
            if runs and runs[0].is_finished:
                return runs[0]
            time.sleep(1)
    raise AssertionError(f"run {prefix} did not finish in {timeout} s")


def test_materialize_a_subject_from_the_asset_page(dagster_dev, monkeypatch) -> None:
    from playwright.sync_api import sync_playwright

    url, home = dagster_dev
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/assets/raw_images")
            materialize = page.get_by_role("button", name="Materialize…")
            materialize.wait_for()
            page.wait_for_timeout(1500)  # the first visit may open a newsletter dialog
            if page.get_by_role("button", name="Skip").count():
                page.get_by_role("button", name="Skip").click()
            materialize.click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            dialog.get_by_text("Select a partition or create one").click()
            page.keyboard.type("sample")
            page.get_by_role("menuitem").filter(has_text="sample").last.click()
            dialog.get_by_role("button", name="Launch").click()
            toast = page.get_by_text("Launched run")
            toast.wait_for()
            run_prefix = toast.inner_text().split()[-1]
            run = _wait_for_run(home, run_prefix)
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
            assert run.tags.get("dagster/partition") == "sample"

            page.goto(f"{url}/assets/raw_images?partition=sample")
            metadata = page.get_by_role("table").filter(has_text="files_decoded")
            metadata.wait_for()
            text = metadata.inner_text()
            for key in ("images", "rejected", "files_decoded", "contact_sheet", "manifest"):
                assert key in text, key
            page.get_by_text("[Show Markdown]").first.click()
            sheet = page.get_by_role("dialog").locator("img").first
            sheet.wait_for()
            assert sheet.evaluate("img => img.naturalWidth") > 100  # the contact sheet rendered
            page.wait_for_timeout(1000)  # let the dialog finish fading in
            page.screenshot(path=str(ARTIFACTS / "ui-raw_images-sample.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "ui-failure.png"))
            raise
        finally:
            browser.close()

"""The web page in a real headless browser (Debian's chromium via chromium-driver): type a
text, click, read the rendered label, compare it with the runtime's own answer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_util import ThreadedServer

from clf_runtime import Classifier
from clf_runtime.serve import ServeConfig, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI"):  # CI installs them (.ci/run): missing there is a failure
            pytest.fail("chromium / chromedriver not installed; .ci/run must apt-get them")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=390,844",  # a phone-sized screen
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def classify_in_page(driver: Any, url: str, text: str) -> tuple[str, list[str]]:
    """Type ``text``, click Classify; return the top label and the bar labels shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chips .chip"))  # /info loaded
    box = driver.find_element(By.ID, "texts")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "classify").click()
    top = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#results .top")))
    bars = driver.find_elements(By.CSS_SELECTOR, "#results .bar")
    return top.text, [b.get_attribute("data-label") for b in bars]


def test_the_page_shows_the_runtimes_answer(
    browser: Any, tiny_export_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    text = "WINNER!! You have been selected for a free prize, call now"
    expected = clf.predict([text])[0]
    with ThreadedServer(create_app(clf)) as srv:
        label, bars = classify_in_page(browser, srv.url + "/", text)
        assert label == expected.label
        by_prob = sorted(expected.probs, key=expected.probs.__getitem__, reverse=True)
        assert bars == by_prob  # every label, most probable first
        latency = browser.find_element(By.ID, "latency").text
        assert "ms round trip" in latency and "server" in latency
        info = browser.find_element(By.ID, "info").text
        assert "int8" in info and "negative, neutral, positive" in info
        # Usable on a phone: nothing wider than the screen.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
        browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 1000


def test_the_page_asks_for_the_api_key(browser: Any, tiny_export_dir: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clf = Classifier.load(tiny_export_dir, providers="cpu", threads=1, precision="int8")
    with ThreadedServer(create_app(clf, ServeConfig(api_key="k3y"))) as srv:
        browser.get(srv.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "key-row").is_displayed())
        assert "API key" in browser.find_element(By.ID, "error").text
        key = browser.find_element(By.ID, "api-key")
        key.send_keys("k3y")
        browser.find_element(By.ID, "texts").click()  # leaving the field stores the key
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chips .chip"))
        browser.find_element(By.ID, "texts").send_keys("hello")
        browser.find_element(By.ID, "classify").click()
        top = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .top"))
        assert top[0].text == clf.predict(["hello"])[0].label

"""Screenshot of clf-serve's web page for the README (not a benchmark: a README artifact).

Starts ``clf-serve EXPORT`` on 127.0.0.1 (port 0), opens ``/`` in Debian's headless chromium
(through chromium-driver and Selenium), types a few texts, clicks Classify and saves a PNG.

Usage: ``python benchmarks/screenshot_page.py EXPORT --out docs/serve_page.png
[--size 900x1000]``. Needs ``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from loadgen import ServerProcess

TEXTS = (
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize "
    "reward! To claim call 09061701461.",
    "Are we still on for lunch tomorrow? I can pick you up at 12",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121",
)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="export directory or .onnx file")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--size", default="900x1000", help="window WIDTHxHEIGHT in CSS pixels")
    args = ap.parse_args(argv)
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        print(
            "needs chromium and chromedriver: apt-get install chromium chromium-driver",
            file=sys.stderr,
        )
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    width, height = (int(v) for v in args.size.split("x"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    server = ServerProcess(
        "clf-serve", [sys.executable, "-m", "clf_runtime.serve", str(args.model), "--port", "0"]
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chips .chip"))
        driver.find_element(By.ID, "texts").send_keys("\n".join(TEXTS))
        driver.find_element(By.ID, "classify").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .top"))
        time.sleep(0.3)  # let the bars' layout settle
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
        server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

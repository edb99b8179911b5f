"""The web page in real headless Chromium (Debian's ``chromium``): drop a photo, see the three images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve.live import RECEIVER_KEY, png, synthetic_face

CHROMIUM = os.environ.get("IPMN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium installed (Debian: apt-get install chromium; .ci/run installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with playwright")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
#: where the README's screenshot is written when IPMN_SCREENSHOT names a file (docs/serve.png)
SCREENSHOT = os.environ.get("IPMN_SCREENSHOT")


def test_drop_a_photo_see_original_protected_and_recovered(client, tmp_path: Path) -> None:
    photo = tmp_path / "face.png"
    photo.write_bytes(png(synthetic_face(0, 256)))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 580})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(client.url + "/")
            page.fill("#key", RECEIVER_KEY)
            page.set_input_files("#file", str(photo))
            for image in ("#original", "#protected", "#recovered"):
                page.wait_for_function(
                    f"() => {{ const i = document.querySelector('{image}'); return i.src && i.complete "
                    "&& i.naturalWidth > 0; }",
                    timeout=60_000,
                )
            assert page.text_content("#status") == "done"
            assert page.is_visible("#download")
            if SCREENSHOT:
                page.screenshot(path=SCREENSHOT)
            # without the key: protected, but no recovered photo, and a hint instead of an error
            page.fill("#key", "")
            page.set_input_files("#file", [])
            page.set_input_files("#file", str(photo))
            page.wait_for_function("() => document.querySelector('#status').textContent.includes('type the')")
            assert page.get_attribute("#recovered", "src") is None
        finally:
            browser.close()
    assert all(url.startswith((client.url, "blob:")) for url in requests), requests  # nothing from elsewhere

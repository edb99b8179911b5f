"""The README's screenshot of ``ipmn serve``'s web page with trained bundles, in headless Chromium.

    python benchmarks/serve_screenshot.py --bundles runs/demo/bundles --out docs/serve.png

Serves the bundles in photo mode (uvicorn in a thread on 127.0.0.1), makes a photo of one built-in synthetic face
on a plain background (nobody's face: the screenshot may be committed), drops it on the page as a user would,
types the receiver's key and saves the page once the original, the protected and the recovered photo are shown.
Prints the PSNR of the recovered photo to the original inside the face box and whether the rest is unchanged.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", required=True, help="folder with service/receiver/verifier.safetensors")
    parser.add_argument("--out", default=str(REPO / "docs" / "serve.png"))
    parser.add_argument("--seed", type=int, default=3, help="which synthetic face")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)

    from playwright import sync_api

    from ipmn_lightning.serve.engine import ServiceEngine
    from ipmn_lightning.serve.keys import ApiKeys
    from tests.serve.live import RECEIVER_KEY, live, png, synthetic_face

    bundles = Path(args.bundles)
    engine = ServiceEngine(
        bundles / "service.safetensors", bundles / "receiver.safetensors", bundles / "verifier.safetensors"
    )
    photo = Image.new("RGB", (480, 360), (214, 222, 230))
    photo.paste(synthetic_face(args.seed, 224), (128, 60))
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "photo.png"
        file.write_bytes(png(photo))
        for server in live(engine, ApiKeys(receiver=RECEIVER_KEY), rate=10**6):
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
                try:
                    page = browser.new_page(viewport={"width": 1000, "height": 580})
                    page.goto(server.client.url + "/")
                    page.fill("#key", RECEIVER_KEY)
                    page.set_input_files("#file", str(file))
                    for image in ("#original", "#protected", "#recovered"):
                        page.wait_for_function(
                            f"() => {{ const i = document.querySelector('{image}'); return i.src && i.complete "
                            "&& i.naturalWidth > 0; }",
                            timeout=120_000,
                        )
                    page.screenshot(path=args.out)
                finally:
                    browser.close()
            protected = server.client.post("/protect", png(photo))
            recovered = server.client.post("/recover", protected.body, key=RECEIVER_KEY)
    before = np.asarray(photo, dtype=np.float64)
    after = np.asarray(Image.open(io.BytesIO(recovered.body)).convert("RGB"), dtype=np.float64)
    changed = np.any(before != after, axis=2)
    ys, xs = np.nonzero(changed)
    box = (slice(128 - 40, 128 + 224 + 40), slice(60 - 40, 60 + 224 + 40))  # the face and its margin
    inside = (before[box[1], box[0]] - after[box[1], box[0]]) ** 2
    psnr = 10 * np.log10(255**2 / max(inside.mean(), 1e-12))
    print(f"wrote {args.out}; recovered vs original around the face: {psnr:.2f} dB; changed pixels span "
          f"x {xs.min() if len(xs) else '-'}-{xs.max() if len(xs) else '-'}, "
          f"y {ys.min() if len(ys) else '-'}-{ys.max() if len(ys) else '-'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The documentation as a reader gets it: build the site with warnings as errors, check its internal links
(Sphinx's linkcheck, external addresses left out), then open pages in a real headless browser (Debian's Chromium):
each renders (a non-blank screenshot, written to docs/_build/screenshots/) and shows what it must.

    python scripts/docs_check.py          # after `make docs`'s install; `make docs-check` runs it
"""

import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD = DOCS / "_build"
# page -> a text its rendered DOM must hold
PAGES = {
    "index.html": "MBDPO in your own TorchRL loop",
    "getting-started.html": "The contract every command keeps",
    "reference/api.html": "MBDPOLoss",
    "reference/configuration.html": "planner.num_samples",
    "results.html": "Speed of the planner and the update",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def sphinx(builder: str, *extra: str) -> None:
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", builder, *extra, str(DOCS), str(BUILD / builder)]
    subprocess.run(cmd, check=True)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("error: no Chromium: install Debian's package (apt-get install chromium), as `make docs-check` does.")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def main() -> None:
    sphinx("html")
    sphinx("linkcheck", "-D", "linkcheck_ignore=https?://.*")  # internal links and anchors only
    from PIL import Image, ImageStat

    shots = BUILD / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for i, (page, text) in enumerate(PAGES.items()):
        url = (BUILD / "html" / page).as_uri()
        dom = chromium("--dump-dom", url, profile=shots / f".profile{i}").stdout
        assert text in dom, f"{page}: the rendered page lacks {text!r}"
        png = shots / page.replace("/", "_").replace(".html", ".png")
        chromium("--window-size=1280,900", f"--screenshot={png}", url, profile=shots / f".profile{i}")
        spread = max(ImageStat.Stat(Image.open(png).convert("L")).stddev)
        assert spread > 10, f"{page}: the screenshot is blank (pixel spread {spread:.1f})"
        print(f"{page}: rendered, {text!r} shown, screenshot {png} (pixel spread {spread:.0f})")
    print("docs check: OK")


if __name__ == "__main__":
    main()

"""Take a screenshot of every page of each role into docs/screens/, with an index page.

    .venv/bin/python scripts/screens.py [--out docs/screens] [--width 1280] [--narrow]

It builds a throwaway trial (users, list, three participants, a prepared kit,
an emergency unblinding whose review is open) in a temporary folder, serves
it on a loopback port, and walks each role's tour of the browser tests
(``tests.support.browser.tour``) in Debian's Chromium; after the lock it
walks the statistician's again. ``--narrow`` adds each page at 320 CSS pixels
wide. Only this script's screenshots (named after a role) are replaced; other
images in the folder stay. Needs what the browser tests need:
``apt-get install chromium && (cd tests/browser && npm ci)`` (axe-core is not
used here, only the browser).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backends.live import live_server  # noqa: E402
from tests.support.browser import (  # noqa: E402
    INSTALL_HINT,
    chromium,
    chromium_path,
    log_in,
    prepare_tour,
    tour,
)
from tests.support.trial import (  # noqa: E402
    ADMIN,
    PASSWORDS,
    USER_OF_ROLE,
    build_trial,
    scratch_trial,
)

ROLES = (None, "investigator", "pharmacist", "monitor", "statistician", "admin")
"""Whose pages, in the order of the index (None: not logged in)."""

TITLES = {
    "visitor": "Not logged in",
    "investigator": "Investigator",
    "pharmacist": "Pharmacist (unblinded)",
    "monitor": "Monitor",
    "statistician": "Statistician, before the lock",
    "statistician-locked": "Statistician, after the lock",
    "admin": "Admin",
}


def main() -> int:
    """Take the screenshots; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screens")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--narrow", action="store_true", help="also each page at 320 px")
    options = parser.parse_args()
    if chromium_path() is None:
        print(f"no Chromium on this machine; install it: {INSTALL_HINT}", file=sys.stderr)
        return 1
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        if old.name.startswith(tuple(f"{group}-" for group in TITLES)):
            old.unlink()  # only this script's screenshots: other images live here too
    started = time.monotonic()
    shots: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as folder, scratch_trial(Path(folder)) as run:
        build_trial(run, "list")
        trial = prepare_tour(run)
        with live_server(run.files.db_url, run.files.key_file) as url, chromium() as browser:

            def walk(role: str | None, group: str, locked: bool = False) -> None:
                context = browser.new_context(
                    base_url=url, viewport={"width": options.width, "height": 800}
                )
                page = context.new_page()
                if role is not None:
                    user = USER_OF_ROLE[role]
                    log_in(page, url, user, PASSWORDS[user])
                for stop in tour(role, trial, locked=locked):
                    stop.reach(page)
                    name = f"{group}-{stop.name}.png"
                    page.screenshot(path=out / name, full_page=True)
                    shots.setdefault(group, []).append(name)
                    if options.narrow:
                        page.set_viewport_size({"width": 320, "height": 640})
                        narrow = f"{group}-{stop.name}-narrow.png"
                        page.screenshot(path=out / narrow, full_page=True)
                        shots[group].append(narrow)
                        page.set_viewport_size({"width": options.width, "height": 800})
                context.close()

            for role in ROLES:
                walk(role, role or "visitor")
            run.ok("lock", "--reason", "screenshots after the lock", user=ADMIN)
            walk("statistician", "statistician-locked", locked=True)
    write_index(out, shots)
    count = sum(len(names) for names in shots.values())
    print(f"{count} screenshots in {out} ({time.monotonic() - started:.1f} s)")
    return 0


def write_index(out: Path, shots: dict[str, list[str]]) -> None:
    """docs/screens/README.md: every screenshot under its role's heading."""
    lines = [
        "# Screenshots of the pages",
        "",
        "Every page of each role, as `scripts/screens.py` took them from a throwaway trial",
        "(three participants, one kit prepared, one emergency unblinding under review) in",
        "Chromium. Regenerate with",
        "`.venv/bin/python scripts/screens.py`.",
        "",
    ]
    for group, names in shots.items():
        lines += [f"## {TITLES.get(group, group)}", ""]
        for name in names:
            page = name.removeprefix(f"{group}-").removesuffix(".png")
            lines += [f"### {page}", "", f"![{group}: {page}]({name})", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

"""A trial with two sites and users limited to one of them, for the per-site rights tests.

The shipped exosome-ms design with a second site (KRK) next to WAW; besides
the usual one user per role (all trial-wide), :data:`SITE_USERS` are limited:
an investigator and a pharmacist, monitor and statistician at WAW, and an
investigator at KRK.
"""

from __future__ import annotations

from collections.abc import Mapping

from randomizer.design import design_text
from tests.support.trial import ADMIN, PASSWORDS, USERS, Run, backdate_list

SITES = ("WAW", "KRK")

SITE_USERS: Mapping[str, tuple[str, str]] = {
    "wanda": ("investigator", "WAW"),
    "kris": ("investigator", "KRK"),
    "pia": ("pharmacist", "WAW"),
    "mila": ("monitor", "WAW"),
    "sam": ("statistician", "WAW"),
}
"""Users limited to one site: name -> (role, site)."""

SITE_PASSWORDS: Mapping[str, str] = {
    **PASSWORDS,
    **{name: f"pw-{name}-site-123456" for name in SITE_USERS},
}
"""Every user's password, the limited users' included."""


def two_site_design() -> str:
    """The exosome-ms design's TOML with a second site, KRK."""
    text = design_text("exosome-ms")
    assert 'sites = ["WAW"]' in text
    return text.replace('sites = ["WAW"]', 'sites = ["WAW", "KRK"]')


def build_two_site_trial(run: Run) -> None:
    """Init the two-site trial, add every user (limited ones with --site), generate the list."""
    design = run.files.directory / "two-sites.toml"
    design.write_text(two_site_design(), encoding="utf-8")
    run.init(design=str(design))
    for name, role in USERS.items():
        if name != ADMIN:
            run.add_user(name, role)
    for name, (role, site) in SITE_USERS.items():
        run.ok(
            "user",
            "add",
            name,
            "--role",
            role,
            "--site",
            site,
            "--password-stdin",
            user=ADMIN,
            input=SITE_PASSWORDS[name] + "\n",
        )
        run.files.users[name] = role
    run.ok("list", "generate", user=ADMIN)
    backdate_list(run.files)

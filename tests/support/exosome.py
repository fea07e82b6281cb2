"""The shipped exosome-ms design as the tests use it: its names, arms and eligible answers.

The arms and labels are written out here rather than read from the design,
so that a change to the shipped design shows up in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from randomizer.design import load_design

DESIGN_NAME = "exosome-ms"
TRIAL_ID = "exosome-ms"
DESIGN = load_design(DESIGN_NAME)
ARMS = ("exosome", "saline")
ARM_LABELS = ("MSC-derived exosomes", "0.9% saline (placebo)")

ELIGIBLE: Mapping[str, str] = {
    "age": "45",
    "progressive_ms": "yes",
    "edss": "4.5",
    "recent_relapse_or_steroids": "no",
    "other_neuro_autoimmune": "no",
    "infection_malignancy_systemic": "no",
}
"""Answers that pass every criterion of the exosome-ms design."""


def answer_args(**overrides: str) -> list[str]:
    """``--answer`` options for the eligible answers, with ``overrides`` replacing some."""
    answers = {**ELIGIBLE, **overrides}
    return [arg for name, value in answers.items() for arg in ("--answer", f"{name}={value}")]


ARM_WORDS = tuple(
    dict.fromkeys(
        word.lower()
        for word in (
            *ARMS,
            *ARM_LABELS,
            "placebo",
            *(arm.id for arm in DESIGN.arms),
            *(arm.label for arm in DESIGN.arms),
        )
    )
)
"""What must never reach a blinded role (matched case-insensitively)."""

PUBLIC_TEXT = (DESIGN.title, TRIAL_ID)
"""Public text that happens to contain arm words: the trial title and id."""


def arm_words_in(text: str) -> list[str]:
    """Arm ids or labels in ``text`` once the public title and trial id are taken out."""
    masked = text
    for public in PUBLIC_TEXT:
        masked = masked.replace(public, "<public>")
    low = masked.lower()
    return [word for word in ARM_WORDS if word in low]

"""What ``unblind all|dummy`` print about the analysis files they write beside --out."""

from __future__ import annotations

import hashlib
from pathlib import Path

from randomizer.commands.unblinding import ANALYSIS_FILES, companion


def analysis_text(out: Path, directory: Path | None = None) -> str:
    """The lines naming each analysis file of ``out`` (as typed) with its SHA-256.

    ``directory`` is where a relative ``out`` was written (the command's working directory).
    """
    lines = ["Analysis files:"]
    for name in ANALYSIS_FILES:
        shown = companion(out, name)
        path = shown if directory is None else directory / shown
        lines.append(f"  {shown} (SHA-256 {hashlib.sha256(path.read_bytes()).hexdigest()})")
    return "\n".join(lines) + "\n"

"""The API's OpenAPI document, as committed in ``docs/openapi.json``.

Regenerate the committed file after changing a route, a body or a result::

    python -m randomizer.server.openapi > docs/openapi.json

A test checks that the committed file is what the app says, so clients and
reviewers read the contract the server really keeps.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from randomizer.server.app import build_app


def document() -> dict[str, Any]:
    """The OpenAPI document of the trial server's API (needs no database or key)."""
    return build_app().openapi()


def render() -> str:
    """The document as committed: pretty-printed, keys sorted, one trailing newline."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    """Write the document to standard output."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

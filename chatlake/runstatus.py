"""What `chatlake up` supervises, as the API's /readyz reads it: `$CHATLAKE_HOME/run/up.json`,
written by the launcher (cli/launcher.py) whenever a component changes state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chatlake.settings import Settings


def status_path(settings: Settings) -> Path:
    """`$CHATLAKE_HOME/run/up.json`: what `up` supervises and how each part is, for /readyz."""
    return settings.run_dir / "up.json"


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The components of the running `up` (None: no `up` runs under this home)."""
    try:
        status = json.loads(status_path(settings).read_text())
        os.kill(int(status["pid"]), 0)  # a file left by an `up` that was killed says nothing
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(status["components"])

"""Where every benchmark's JSON goes: `--out FILE`, else bench/results/<name>."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def write_results(results: dict[str, Any], out: str | None, name: str) -> dict[str, Any]:
    """Write `results` as JSON and return them with `written_to` added."""
    target = Path(out) if out else RESULTS_DIR / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    results["written_to"] = str(target)
    return results

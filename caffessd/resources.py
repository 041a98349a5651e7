"""Where the bundled models live.

In a source checkout or an editable install they are the repository's
`models/` folder; a regular install puts them under <prefix>/share/caffessd.
CAFFESSD_MODELS overrides both.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from caffessd.errors import CaffessdError


def models_dir() -> Path:
    candidates = []
    if os.environ.get("CAFFESSD_MODELS"):
        candidates.append(Path(os.environ["CAFFESSD_MODELS"]))
    candidates.append(Path(__file__).resolve().parent.parent / "models")
    candidates.append(Path(sys.prefix) / "share" / "caffessd" / "models")
    for candidate in candidates:
        if (candidate / "yufacedetectnet").is_dir():
            return candidate
    raise CaffessdError("bundled models not found (looked in " + ", ".join(map(str, candidates)) + ")")


def bundled(*parts: str) -> Path:
    path = models_dir().joinpath(*parts)
    if not path.exists():
        raise CaffessdError(f"bundled file missing: {path}")
    return path

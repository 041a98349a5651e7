"""JSON from files a user hands over (COCO instances, the SSD fork's
per-image annotations, ONNX metadata): one FormatError naming the file for
malformed text and for nesting too deep to parse.

Python's parser recurses once per nesting level; a file nested 100,000
deep ends in a RecursionError whose traceback is 40 lines long. Such a file
is hostile or broken, never a dataset.

Lowest layer: imports nothing from caffessd but `errors`.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from caffessd.errors import FormatError


def parse_json(text, path, what: Optional[str] = None) -> Any:
    """`json.loads(text)`, every failure a FormatError on `path`
    (`what` names the part of the file, e.g. "metadata 'labels'")."""
    prefix = f"{what}: " if what else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"{prefix}malformed JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise FormatError(path, f"{prefix}JSON nested too deeply to read (thousands of levels: not an "
                                f"annotation file)") from None
    except (UnicodeDecodeError, ValueError) as exc:  # bytes that are not UTF-8/16/32, a number too long
        raise FormatError(path, f"{prefix}unreadable JSON ({exc})") from None

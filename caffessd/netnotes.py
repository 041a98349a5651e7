"""Notes caffessd keeps inside a prototxt, in comment lines Caffe ignores.

A deploy prototxt does not say how images must be prepared (mean, scale,
channel order) nor, for nets converted from TensorFlow, which post-processing
details Caffe's DetectionOutput cannot express. caffessd writes those facts as
comment lines at the top of the file:

    # caffessd: {"preprocessing": {"mean": [127.5, 127.5, 127.5], "scale": 0.007843, "channel_order": "BGR"}}

Each line holds one JSON object; several lines merge (later keys win). Caffe,
OpenCV and protobuf's text parser skip them as comments, so the file stays a
valid prototxt for every other tool.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from caffessd.errors import FormatError
from caffessd.util.files import read_bytes

PREFIX = "# caffessd: "


def parse_notes(text: str, path: Union[str, Path, None] = None) -> dict:
    """The merged notes of a prototxt's text ({} when it has none)."""
    notes: dict = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip().lstrip("\ufeff")
        if not line.startswith(PREFIX):
            continue
        try:
            value = json.loads(line[len(PREFIX):])
        except json.JSONDecodeError as exc:
            raise FormatError(path, f"caffessd note is not valid JSON ({exc.msg})", line=number) from None
        except RecursionError:
            raise FormatError(path, "caffessd note is JSON nested too deeply to read", line=number) from None
        if not isinstance(value, dict):
            raise FormatError(path, "caffessd note must be a JSON object", line=number)
        notes.update(value)
    return notes


def read_notes(path: Union[str, Path]) -> dict:
    """The notes of a prototxt file ({} when it has none or is not text)."""
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return parse_notes(text, path)


def with_notes(text: str, notes: dict) -> str:
    """`text` with its caffessd note lines replaced by one line holding `notes`
    (merged over the notes it already had)."""
    merged = {**parse_notes(text), **notes}
    body = [line for line in text.splitlines(keepends=True) if not line.strip().startswith(PREFIX)]
    if not merged:
        return "".join(body)
    return PREFIX + json.dumps(merged, sort_keys=True) + "\n" + "".join(body)

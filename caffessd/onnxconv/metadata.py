"""Preprocessing and conversion facts stored in an ONNX model's metadata_props.

Keys are prefixed `caffessd.` and hold JSON values, so other tools can read
them too (Netron shows them as model properties).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Union

import onnx

from caffessd.errors import CaffessdError, FormatError

PREFIX = "caffessd."
PREPROCESSING_KEYS = ("mean", "scale", "input_size", "channel_order")


def normalise_preprocessing(values: Dict[str, Any]) -> Dict[str, Any]:
    """Check and canonicalise a preprocessing dict (mean, scale, input_size, channel_order)."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "mean":
            mean = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            out[key] = mean
        elif key == "scale":
            out[key] = float(value)
        elif key == "input_size":
            width, height = (int(v) for v in value)
            out[key] = [width, height]
        elif key == "channel_order":
            order = str(value).upper()
            if order not in ("BGR", "RGB"):
                raise CaffessdError(f"channel_order must be BGR or RGB, not '{value}'")
            out[key] = order
        else:
            out[key] = value
    return out


def set_metadata(model: onnx.ModelProto, values: Dict[str, Any]) -> None:
    """Store `values` as `caffessd.<key>` entries with JSON values."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        full = PREFIX + key
        text = json.dumps(value)
        if full in existing:
            existing[full].value = text
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = full, text


def load_model(path: Union[str, os.PathLike]) -> onnx.ModelProto:
    """Read an .onnx file, naming it in the error when it is missing or not ONNX."""
    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except FileNotFoundError:
        raise FormatError(path, "no such file") from None
    except Exception as exc:  # onnx raises DecodeError and others
        raise FormatError(path, f"not an ONNX model ({exc.__class__.__name__})") from None


def read_metadata(model: Union[onnx.ModelProto, str, os.PathLike]) -> Dict[str, Any]:
    """All caffessd.* metadata of a model (or .onnx file), JSON-decoded."""
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    found = {}
    for prop in model.metadata_props:
        if prop.key.startswith(PREFIX):
            try:
                found[prop.key[len(PREFIX):]] = json.loads(prop.value)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: kept as text
                found[prop.key[len(PREFIX):]] = prop.value
    return found


def read_preprocessing(model) -> Dict[str, Any]:
    """{mean, scale, input_size, channel_order} as stored at export (missing keys absent)."""
    meta = read_metadata(model)
    return {key: meta[key] for key in PREPROCESSING_KEYS if key in meta}

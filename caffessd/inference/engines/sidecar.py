"""Metadata beside an artifact whose format has no place for it (ncnn's
.param/.bin, a TFLite file): NAME.caffessd.json next to NAME.<suffix>.

The JSON object holds exactly what caffessd stores in an ONNX model's
metadata_props (without the `caffessd.` prefix): mean, scale, input_size,
channel_order, labels, detection_output, kind, inputs, ... so that every
engine's `metadata` reads the same. Artifacts with their own metadata store
(ONNX metadata_props, OpenVINO rt_info) keep it inside the file instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from caffessd.errors import FormatError

SUFFIX = ".caffessd.json"


def sidecar_path(artifact) -> Path:
    """NAME.caffessd.json for NAME.param, NAME.bin, NAME.tflite, ..."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.stem + SUFFIX)


def sidecar_text(metadata: Dict[str, Any]) -> str:
    """The sidecar's content (sorted keys: the same metadata, the same bytes)."""
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"


def read_sidecar(artifact) -> Dict[str, Any]:
    """The metadata beside `artifact`; FormatError naming the sidecar when it
    is missing or not a JSON object."""
    path = sidecar_path(artifact)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(path, f"missing: {Path(artifact).name} needs the metadata file caffessd wrote beside "
                                "it (preprocessing, labels, DetectionOutput settings)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(path, f"not caffessd metadata ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise FormatError(path, "not caffessd metadata (a JSON object is expected)")
    return data

"""The facts every caffessd export carries about its model, whatever the
format: the same dict the ONNX export stores in its metadata_props, so that
an engine reading an ncnn or TFLite sidecar sees exactly what it would read
from the ONNX file of the same net (kind, inputs, detection_output, mean,
scale, input_size, channel_order, labels).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from caffessd.netprep import net_preprocessing
from caffessd.onnxconv.metadata import normalise_preprocessing
from caffessd.onnxconv.ssd import detection_settings


def export_facts(net, *, raw: bool, input_shapes: Dict[str, tuple], preprocessing: Optional[dict] = None
                 ) -> Dict[str, Any]:
    """What to_onnx(net, raw=raw, ...) records with metadata=preprocessing.
    `input_shapes`: {input name: shape} as exported."""
    detection = [layer for layer in net.param.layer if layer.type == "DetectionOutput"]
    facts: Dict[str, Any] = {"kind": "raw" if raw and detection else "full",
                             "inputs": {name: [int(d) for d in shape] for name, shape in input_shapes.items()}}
    if detection:
        facts["detection_output"] = detection_settings(detection[0], dict(getattr(net, "notes", None) or {}))
    values = dict(preprocessing or {})
    first = next(iter(input_shapes.values()), None)
    if first is not None and len(first) == 4:
        values.setdefault("input_size", [int(first[3]), int(first[2])])
    facts.update(normalise_preprocessing(values))
    return facts


def net_metadata(prototxt) -> Dict[str, Any]:
    """The preprocessing an export records when the caller gives none: the
    net's own (its caffessd note or a train/test prototxt beside it, as
    detect reads it), else only the channel order (BGR), as export-onnx does."""
    own = net_preprocessing(prototxt)
    if own.assumed:
        return {"channel_order": "BGR", "mean": None, "scale": None}
    return {"channel_order": "RGB" if own.rgb else "BGR", "mean": list(own.mean), "scale": own.scale}

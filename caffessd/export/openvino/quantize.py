"""int8 IRs with NNCF's post-training quantization (the OpenVINO field's
quantizer): activations calibrated on real pictures preprocessed exactly as
the model's metadata says (caffessd.inference.calibration, shared with
`caffessd quantize`), weights per channel.

DetectionOutput stays float: NNCF is told to leave it alone (it never
quantizes its inputs' decode, NMS or priors), and the priors are a constant
it does not touch, so boxes move only as much as the int8 convolutions move
loc and conf. Quantization runs on the float graph before the
PrePostProcessor steps are added, so calibration feeds the same blobs
`detect` makes.
"""
from __future__ import annotations

from typing import List

import numpy as np

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines.base import require_runtime
from caffessd.inference.engines.openvino_engine import without_openvino_telemetry
from caffessd.util.imports import unimportable
from caffessd.export.openvino.build import first_line

# Op types NNCF must leave in float whatever its defaults.
FLOAT_OPS = ["DetectionOutput"]


def nncf_module():
    """NNCF, or one line naming the extra it comes with."""
    with _without_torch(), without_openvino_telemetry():
        return require_runtime("nncf", engine="openvino", extra="openvino", who="export-openvino --int8")


def _without_torch():
    """`import nncf` imports torch where it is installed, and nncf.quantize
    probes a model's framework torch first: for an OpenVINO model that costs
    seconds (about 10 s of a 13 s import here) and prints a "No CUDA runtime"
    warning on stderr. Unless this process already uses torch, hide it
    meanwhile (NNCF then works as on a machine without torch)."""
    return unimportable("torch")


def quantize(model, blobs: List[np.ndarray], source):
    """The int8 ov.Model of `model` calibrated on `blobs` (1x3xHxW float32)."""
    nncf = nncf_module()
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)  # advice lines otherwise
    dataset = nncf.Dataset(blobs)
    try:
        with _without_torch():
            return nncf.quantize(model, dataset, subset_size=len(blobs), target_device=nncf.TargetDevice.CPU,
                                 ignored_scope=nncf.IgnoredScope(types=FLOAT_OPS, validate=False))
    except (CaffessdError, KeyboardInterrupt):
        raise
    except Exception as exc:  # NNCF raises its own types
        raise FormatError(source, f"NNCF could not quantize the net: {first_line(exc)}") from None


def count_fake_quantize(model) -> int:
    """FakeQuantize ops in an ov.Model: how much of it runs int8."""
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")

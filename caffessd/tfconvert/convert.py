"""convert_tf: a TF Object Detection API SSD checkpoint to a Caffe deploy net + caffemodel."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from caffessd import protoio
from caffessd.errors import CaffessdError
from caffessd.netnotes import with_notes
from caffessd.netprep import TF_MEAN, TF_SCALE, with_preprocessing
from caffessd.util.files import atomic_write_many

from . import anchors as anchor_plans
from .checkpoint import frozen_input_size, open_variables
from .classes import class_selection, labelmap_text, read_class_map
from .detect import detect_spec
from .mapping import HeadOrder, WeightFiller, strip_blobs
from .netgen import deploy_net, postprocessing_note
from .pipeline import PipelineConfig, read_pipeline
from .tf2 import zoo_pipeline
from .zoo import ModelSpec

DEPLOY_NAME = "deploy.prototxt"
WEIGHTS_NAME = "deploy.caffemodel"
LABELMAP_NAME = "labelmap.prototxt"


@dataclass
class ConversionResult:
    spec: ModelSpec
    height: int
    width: int
    prototxt: Path
    caffemodel: Path
    labelmap: Optional[Path]
    variables: List[Tuple[str, str]]          # (TF variable read, Caffe layer fed)
    anchor_orders: List[List[int]]            # per head: Caffe anchor k <- TF anchor
    class_slots: List[int]                    # Caffe class c <- TF class slot
    plain_deviation: Optional[Dict[str, float]] = None
    notes: List[str] = field(default_factory=list)


# Quantization-aware training (tf.contrib.quantize) stores FakeQuant ranges as
# '<conv scope>/weights_quant/{min,max}', '<scope>/act_quant/{min,max}' (and
# other '*_quant' scopes, e.g. on residual adds). The Caffe net computes in float.
_QUANT_RANGE = re.compile(r"(^|/)[A-Za-z0-9_]*_quant/(min|max)$")


def quantization_note(store) -> Optional[str]:
    """A report line when the checkpoint holds FakeQuant ranges (which are dropped)."""
    ranges = sorted({name.rsplit("/", 1)[0] for name in store.names() if _QUANT_RANGE.search(name)})
    if not ranges:
        return None
    weights = sum(1 for r in ranges if r.endswith("weights_quant"))
    return (f"dropped {len(ranges)} FakeQuant quantization ranges ({weights} on weights, "
            f"{len(ranges) - weights} on activations) of a quantization-aware checkpoint: "
            "the Caffe net computes in float with the float weights")


def _input_size(ckpt, cfg: PipelineConfig, input_size) -> Tuple[int, int]:
    if input_size is not None:
        return input_size
    if cfg.height and cfg.width:
        return int(cfg.height), int(cfg.width)
    size = frozen_input_size(ckpt)
    return size if size else (300, 300)


def _check_anchor_counts(spec: ModelSpec, plans) -> None:
    for head, plan in zip(spec.heads, plans):
        if head.num_anchors != plan.num_boxes:
            raise CaffessdError(
                f"BoxPredictor_{head.index} predicts {head.num_anchors} boxes per cell but the "
                f"anchor generator makes {plan.num_boxes} (pass the model's --pipeline config)")


def build_weights(store, spec: ModelSpec, cfg: PipelineConfig, height: int, width: int,
                  slots: List[int], exact: bool, merge_bn: bool, bgr: bool,
                  progress: Optional[Callable[[int, int], None]] = None):
    """(filled deploy NetParameter, WeightFiller, anchor orders)."""
    plans = anchor_plans.plan_priors(cfg.anchors, height, width)
    if len(plans) != len(spec.heads):
        raise CaffessdError(f"the anchor generator has {len(plans)} layers but the model "
                            f"{len(spec.heads)} box predictors")
    _check_anchor_counts(spec, plans)
    net = deploy_net(spec, cfg, height, width, plans, len(slots) - 1, exact=exact, merge_bn=merge_bn)
    filler = WeightFiller(net, store, bn_scale_present=cfg.batch_norm_scale)
    orders = [HeadOrder(plan.tf_order, slots) for plan in plans]
    filler.fill_model(spec, orders, progress=progress)
    if bgr:
        # TF models take RGB; Caffe pipelines (cv2.imread, blobFromImage) feed BGR.
        first = filler.layers[spec.backbone[0].caffe_layer]
        weights = protoio.blob_to_array(first.blobs[0])
        first.blobs[0].CopyFrom(protoio.array_to_blob(np.ascontiguousarray(weights[:, ::-1])))
    return net, filler, [p.tf_order for p in plans]


def convert_tf(ckpt, out_dir, pipeline=None, input_size: Optional[Tuple[int, int]] = None,
               merge_bn: bool = False, plain_caffe: bool = False, use_ema: bool = False,
               classes: Optional[str] = None, class_map=None, bgr: bool = True,
               progress: Optional[Callable[[int, int], None]] = None) -> ConversionResult:
    """Convert `ckpt` (prefix, folder or frozen .pb) into `out_dir`.

    Exact mode (default) emits ReLU6 and TF SAME padding so outputs match TF;
    `plain_caffe` emits ReLU and symmetric padding for stock Caffe and measures
    the deviation that costs against the exact net.
    """
    if pipeline is None:
        pipeline = zoo_pipeline(ckpt)  # a TF2 zoo folder carries its pipeline.config
    cfg = read_pipeline(pipeline) if pipeline else PipelineConfig()
    if class_map is not None:
        read_class_map(class_map)  # a bad file fails before a large checkpoint is loaded
    store = open_variables(ckpt, use_ema=use_ema)
    spec = detect_spec(store, cfg)
    height, width = _input_size(ckpt, cfg, input_size)
    slots, names = class_selection(spec.num_classes, classes, class_map)
    net, filler, orders = build_weights(store, spec, cfg, height, width, slots, exact=not plain_caffe,
                                        merge_bn=merge_bn, bgr=bgr, progress=progress)
    deviation = None
    if plain_caffe:
        exact_net, _, _ = build_weights(store, spec, cfg, height, width, slots, exact=True,
                                        merge_bn=merge_bn, bgr=bgr)
        deviation = measure_deviation(exact_net, net, height, width)

    out_dir = Path(out_dir)
    # TF's SSD preprocessing is x / 127.5 - 1 and its post-processing clips before NMS:
    # the notes let detect and export-onnx apply both.
    deploy_text = with_preprocessing(protoio.prototxt_text(strip_blobs(net)), [TF_MEAN], TF_SCALE, rgb=not bgr)
    deploy_text = with_notes(deploy_text, postprocessing_note(cfg, tf2=store.object_based))
    files = [(out_dir / DEPLOY_NAME, deploy_text),
             (out_dir / WEIGHTS_NAME, protoio.serialize(net))]
    text = labelmap_text(names)
    if text is not None:
        files.append((out_dir / LABELMAP_NAME, text))
    written = atomic_write_many(files)  # all or none
    prototxt, caffemodel = written[:2]
    labelmap = written[2] if text is not None else None
    notes = [note for note in (quantization_note(store),) if note]
    return ConversionResult(spec, height, width, prototxt, caffemodel, labelmap, filler.read,
                            orders, slots, deviation, notes)


def measure_deviation(exact_net, plain_net, height: int, width: int) -> Dict[str, float]:
    """Largest |difference| of box encodings and class logits, plain vs exact net."""
    from .evaluate import probe_image, run_caffe

    image = probe_image(height, width)
    results = []
    with tempfile.TemporaryDirectory(prefix="caffessd-tf-") as tmp:
        for tag, net in (("exact", exact_net), ("plain", plain_net)):
            proto = protoio.write_prototxt(strip_blobs(net), Path(tmp) / f"{tag}.prototxt")
            model = protoio.write_caffemodel(net, Path(tmp) / f"{tag}.caffemodel")
            results.append(run_caffe(proto, model, image))
    exact, plain = results
    return {name: float(np.max(np.abs(exact[name] - plain[name]))) for name in exact}

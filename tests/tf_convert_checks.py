"""Comparing a converted Caffe net with the TF reference graph it came from.

Independent engines run the Caffe net: OpenCV 4.x's Caffe importer and
caffessd's ONNX path (onnxruntime). TF's outputs are put into Caffe's order
with the anchor order the converter reports, which the prior comparison
(Caffe PriorBox output vs TF's anchors, box by box) verifies independently.
"""
from __future__ import annotations

import numpy as np

TOL = 1e-4  # max |difference| allowed between TF and the converted net


def caffe_index(anchor_orders, feature_sizes):
    """Row of TF's concatenated anchor list for each Caffe prior, in Caffe order."""
    rows, start = [], 0
    for order, (fh, fw) in zip(anchor_orders, feature_sizes):
        per = len(order)
        for cell in range(fh * fw):
            rows.extend(start + cell * per + a for a in order)
        start += fh * fw * per
    return np.array(rows)


def caffe_decode(loc, priors, variances):
    """Caffe SSD's CENTER_SIZE decoding (variance not encoded in target)."""
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    px, py = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    cx = variances[:, 0] * loc[:, 0] * pw + px
    cy = variances[:, 1] * loc[:, 1] * ph + py
    w = np.exp(variances[:, 2] * loc[:, 2]) * pw
    h = np.exp(variances[:, 3] * loc[:, 3]) * ph
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)  # TF's (y, x) order


def run_opencv(result, image_nchw):
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(result.prototxt), str(result.caffemodel))
    net.setInput(image_nchw)
    loc, conf, priors = net.forward(["mbox_loc", "mbox_conf", "mbox_priorbox"])
    return loc, conf, priors


def run_onnx(result, image_nchw):
    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx as run

    model = convert(str(result.prototxt), str(result.caffemodel), raw=True,
                    extra_outputs=["mbox_loc", "mbox_conf", "mbox_priorbox"])
    out = run(model, {"data": image_nchw})
    return out["mbox_loc"], out["mbox_conf"], out["mbox_priorbox"]


def compare(result, tf_out, caffe_out, feature_sizes, classes_out, skip_last_layer=False):
    """Max differences: loc, conf, priors vs TF anchors, decoded boxes."""
    box, logits, anchors = tf_out
    loc, conf, priors = caffe_out
    idx = caffe_index(result.anchor_orders, feature_sizes)
    loc = loc.reshape(-1, 4)
    conf = conf.reshape(-1, classes_out)
    priors = priors.reshape(2, -1, 4)
    assert loc.shape[0] == len(idx) == box.shape[0]
    want_loc = box[idx][:, [1, 0, 3, 2]]                  # (ty,tx,th,tw) -> (x,y,w,h)
    want_conf = logits[idx][:, result.class_slots]
    keep = slice(None)
    if skip_last_layer:
        fh, fw = feature_sizes[-1]
        keep = slice(0, len(idx) - fh * fw * len(result.anchor_orders[-1]))
    with np.errstate(over="ignore"):  # decoy weights (EMA test) may overflow exp
        tf_decoded = decode_tf(box, anchors)[idx]
        caffe_decoded = caffe_decode(loc, priors[0], priors[1])
    return {
        "loc": float(np.abs(loc[keep] - want_loc[keep]).max()),
        "conf": float(np.abs(conf[keep] - want_conf[keep]).max()),
        "priors": float(np.abs(priors[0][:, [1, 0, 3, 2]] - anchors[idx]).max()),
        "variance": priors[1],
        "decoded": float(np.abs(caffe_decoded[keep] - tf_decoded[keep]).max()),
    }


def decode_tf(box, anchors):
    from tf_ssd_reference import decode

    return decode(box, anchors)

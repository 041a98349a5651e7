"""Evaluation: mAP of any model caffessd can run, on VOC, COCO and WIDER FACE.

    from caffessd.eval import voc_evaluate      # per-image detections + ground truth -> VocResult
    from caffessd import evaluate               # model + dataset + metric -> EvalResult

One module per concern: matching (IoU, greedy matching), voc (the SSD fork's
ComputeAP), coco (pycocotools), wider (the WIDER FACE toolbox protocol),
runner (streaming detection over a dataset), report (table, JSON, plots).

May import: util, the core, image/, datasets/ and inference/.
"""
from caffessd.eval.voc import VocAccumulator, VocResult, average_precision, voc_evaluate

__all__ = ["VocAccumulator", "VocResult", "average_precision", "voc_evaluate", "evaluate"]


def __getattr__(name):
    if name == "evaluate":
        from caffessd.eval.runner import evaluate
        return evaluate
    raise AttributeError(f"module 'caffessd.eval' has no attribute {name!r}")

"""Coverage figures a person reads: totals, per prior layer, by object size
(COCO's small/medium/large by pixel area, and by the share of the image the
box covers), the objects no prior matches; as text and as JSON."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from caffessd.analysis.coverage import Coverage

COCO_BUCKETS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, float("inf")))
# Box area as a share of the image area.
SHARE_EDGES = (0.0, 0.005, 0.02, 0.08, 0.25, float("inf"))


def share_buckets():
    names = []
    for lo, hi in zip(SHARE_EDGES[:-1], SHARE_EDGES[1:]):
        name = (f"<{hi * 100:g}%" if lo == 0 else f">={lo * 100:g}%" if hi == float("inf")
                else f"{lo * 100:g}-{hi * 100:g}%")
        names.append((name, lo, hi))
    return names


def object_areas(coverage: Coverage):
    """(pixel area, share of the image area) of every object."""
    truth = coverage.truth
    image, _, pixels = truth.arrays()
    sizes = np.asarray(truth.image_sizes, np.float64).reshape(-1, 2)
    area = pixels[:, 0] * pixels[:, 1]
    image_area = sizes[image, 0] * sizes[image, 1] if len(image) else np.zeros(0)
    return area, area / np.maximum(image_area, 1)


def _bucket_row(name: str, mask: np.ndarray, coverage: Coverage) -> dict:
    ious = coverage.best_iou[mask]
    count = int(mask.sum())
    row = {"bucket": name, "objects": count, "matched": int(coverage.strong[mask].sum())}
    row["share"] = row["matched"] / count if count else None
    for key, q in (("iou_p10", 10), ("iou_median", 50), ("iou_p90", 90)):
        row[key] = float(np.percentile(ious, q)) if count else None
    return row


def size_tables(coverage: Coverage) -> Dict[str, List[dict]]:
    area, share = object_areas(coverage)
    coco = [_bucket_row(name, (area >= lo) & (area < hi), coverage) for name, lo, hi in COCO_BUCKETS]
    image = [_bucket_row(name, (share >= lo) & (share < hi), coverage) for name, lo, hi in share_buckets()]
    return {"coco_area": coco, "image_share": image}


def layer_table(coverage: Coverage) -> List[dict]:
    rows = []
    for k, layer in enumerate(coverage.priors.layers):
        step_h, step_w = layer.step()
        rows.append({"layer": layer.name, "map": list(layer.feature_hw), "step": [step_h, step_w],
                     "shapes": [[round(w, 2), round(h, 2)] for w, h in layer.shapes], "priors": layer.count,
                     "objects_served": int(coverage.served[:, k].sum()),
                     "best_prior_here": int((coverage.best_layer == k).sum()),
                     "positives": int(coverage.positives[k])})
    return rows


def unmatched_objects(coverage: Coverage) -> List[dict]:
    """Objects no prior reaches overlap_threshold with, smallest first."""
    truth = coverage.truth
    image, _, pixels = truth.arrays()
    _, share = object_areas(coverage)
    rows = []
    for i in np.flatnonzero(~coverage.strong):
        rows.append({"image": truth.image_names[image[i]], "label": truth.labels[i],
                     "width": round(float(pixels[i, 0]), 2), "height": round(float(pixels[i, 1]), 2),
                     "image_share": round(float(share[i]), 5), "best_iou": round(float(coverage.best_iou[i]), 4),
                     "best_layer": coverage.priors.layers[int(coverage.best_layer[i])].name,
                     "matched_priors": int(coverage.matched_priors[i])})
    rows.sort(key=lambda r: (r["width"] * r["height"], r["image"]))
    return rows


def totals(coverage: Coverage) -> dict:
    truth = coverage.truth
    weak = (~coverage.strong) & (coverage.matched_priors > 0)
    return {"images": len(truth.image_names), "images_without_objects": truth.empty_images,
            "objects": coverage.objects, "matched": coverage.matched, "share": round(coverage.share, 6),
            "bipartite_only": int(weak.sum()), "never_matched": int((coverage.matched_priors == 0).sum()),
            "invalid_left_out": truth.invalid, "difficult_left_out": truth.difficult_left_out,
            "overlap_threshold": coverage.threshold, "input": list(coverage.priors.input_hw),
            "resize_mode": coverage.priors.resize_mode, "priors": int(len(coverage.priors.boxes))}


def report_dict(coverage: Coverage) -> dict:
    return {"totals": totals(coverage), "layers": layer_table(coverage), "sizes": size_tables(coverage),
            "unmatched": unmatched_objects(coverage)}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def text_lines(report: dict, show_unmatched: int = 15) -> List[str]:
    t = report["totals"]
    lines = [f"{t['objects']} objects in {t['images']} images ({t['images_without_objects']} without objects), "
             f"net input {t['input'][1]}x{t['input'][0]} ({t['resize_mode']}), {t['priors']} priors, "
             f"overlap_threshold {t['overlap_threshold']:g}",
             f"matched at the threshold: {t['matched']} ({_pct(t['share'])}); by the bipartite step only "
             f"(best IoU below it): {t['bipartite_only']}; by no prior: {t['never_matched']}"]
    if t["invalid_left_out"] or t["difficult_left_out"]:
        lines.append(f"left out: {t['invalid_left_out']} invalid boxes (see lint-dataset), "
                     f"{t['difficult_left_out']} difficult (use_difficult_gt: false)")
    lines += ["", "prior layer            map     step   priors  serves  best-here  positives  shapes (w x h px)"]
    for row in report["layers"]:
        shapes = " ".join(f"{w:g}x{h:g}" for w, h in row["shapes"])
        lines.append(f"{row['layer'][:22]:22} {row['map'][0]:>3}x{row['map'][1]:<3} {row['step'][1]:6.1f} "
                     f"{row['priors']:7d} {row['objects_served']:7d} {row['best_prior_here']:10d} "
                     f"{row['positives']:10d}  {shapes}")
    for key, title in (("coco_area", "COCO size (pixel area)"), ("image_share", "share of the image area")):
        lines += ["", f"{title:24}  objects  matched   best IoU p10 / median / p90"]
        for row in report["sizes"][key]:
            if row["objects"]:
                lines.append(f"{row['bucket']:24} {row['objects']:8d} {_pct(row['share']):>8}   "
                             f"{row['iou_p10']:.2f} / {row['iou_median']:.2f} / {row['iou_p90']:.2f}")
    unmatched = report["unmatched"]
    if unmatched:
        lines += ["", f"objects no prior matches at the threshold: {len(unmatched)} (smallest first"
                      f"{', all in coverage.json' if len(unmatched) > show_unmatched else ''})"]
        for row in unmatched[:show_unmatched]:
            lines.append(f"  {row['image']}: {row['label']} {row['width']:g}x{row['height']:g} px in the image, "
                         f"best IoU {row['best_iou']:.2f} ({row['best_layer']})")
    return lines

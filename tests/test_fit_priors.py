"""fit-priors: the SSD fork's matching replayed over a dataset on a net's priors.

- A hand-built net (100x100 input, priors 20x20 on a 10x10 grid and 40x40 on a
  5x5 grid) and objects placed on those grids: every count is worked out by
  hand (IoU of a centred square of side s in a prior of side p is s^2/p^2).
- The priors, ground truth and matches equal the train package's own:
  mbox_priorbox from the train executor (TensorFlow), gt rows from the LMDB
  that make-lmdb writes as the trainer reads it, and MultiBoxLoss's
  find_targets match indices (per object: priors matched, whether one
  reaches the threshold, which layers).
- The grid shortcut of the --suggest search equals brute-force IoU (1e-6).
- --suggest on small objects raises coverage without priors smaller than
  their layer's step, and the gen-model flags it prints rebuild exactly the
  priors it scored.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from caffessd.analysis.coverage import replay
from caffessd.analysis.fastiou import best_iou, grid_of
from caffessd.analysis.fit import fit_priors
from caffessd.analysis.groundtruth import collect, letterbox
from caffessd.analysis.netpriors import load_net_priors
from caffessd.boxmatch import jaccard
from caffessd.datasets import open_dataset
from caffessd.datasets.synthetic import write_shapes_voc
from dataset_builders import voc_xml, write_image

GRID_NET = """name: "grid"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 100 dim: 100 } } }
layer { name: "p10" type: "Pooling" bottom: "data" top: "f10" pooling_param { pool: MAX kernel_size: 10 stride: 10 } }
layer { name: "p20" type: "Pooling" bottom: "data" top: "f20" pooling_param { pool: MAX kernel_size: 20 stride: 20 } }
layer { name: "prior_small" type: "PriorBox" bottom: "f10" bottom: "data" top: "ps"
        prior_box_param { min_size: 20 variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "prior_large" type: "PriorBox" bottom: "f20" bottom: "data" top: "pl"
        prior_box_param { min_size: 40 variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "mbox_priorbox" type: "Concat" bottom: "pl" bottom: "ps" top: "mbox_priorbox" concat_param { axis: 2 } }
layer { name: "out" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "mbox_priorbox" top: "det"
        detection_output_param { num_classes: 2 } }
"""


def centred(cx, cy, side):
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


# Small-grid cell centres are 5, 15, ..., 95 (step 10); large-grid ones 10, 30, ..., 90 (step 20).
GRID_IMAGES = {
    "a": [("x", centred(15, 15, 20)),      # IoU 1 with a small prior
          ("x", centred(30, 70, 40)),      # IoU 1 with a large prior
          ("x", centred(55, 55, 8))],      # 64/400 = 0.16 < 0.5: below the smallest prior
    "b": [("x", centred(45, 25, 14)),      # 196/400 = 0.49: just misses
          ("x", centred(85, 85, 15))],     # 225/400 = 0.5625: matched
    "c": [],
}


def write_grid_voc(root: Path) -> Path:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, objects in GRID_IMAGES.items():
        write_image(root / "JPEGImages" / f"{name}.jpg", 100, 100, seed=1)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(100, 100, [(n, b, False) for n, b in objects]))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{n}\n" for n in GRID_IMAGES))
    (root / "net.prototxt").write_text(GRID_NET)
    return root


def test_hand_checked_coverage_on_a_grid_net(tmp_path):
    root = write_grid_voc(tmp_path)
    result = fit_priors(root / "net.prototxt", open_dataset(root, "voc", "trainval"), progress=False)
    priors, cover = result.priors, result.coverage
    assert priors.input_hw == (100, 100) and priors.resize_mode == "INPUT"
    assert [layer.name for layer in priors.layers] == ["prior_large", "prior_small"]   # the Concat's order
    assert [layer.count for layer in priors.layers] == [25, 100] and len(priors.boxes) == 125
    np.testing.assert_allclose(cover.best_iou, [1.0, 1.0, 0.16, 0.49, 0.5625], atol=1e-6)
    assert cover.strong.tolist() == [True, True, False, False, True]
    assert cover.matched == 3 and cover.objects == 5
    assert cover.best_layer.tolist() == [1, 0, 1, 1, 1]
    # Per-prediction: a 20x20 box also overlaps its 40x40 neighbour by 400/1600 = 0.25: only its own prior.
    assert cover.matched_priors.tolist() == [1, 1, 1, 1, 1]
    assert cover.served[:, 0].tolist() == [False, True, False, False, False]
    report = result.report()
    totals = report["totals"]
    assert (totals["images"], totals["images_without_objects"], totals["matched"], totals["bipartite_only"]) == (3, 1, 3, 2)
    unmatched = report["unmatched"]
    assert [(u["image"], u["width"]) for u in unmatched] == [("JPEGImages/a.jpg", 8.0), ("JPEGImages/b.jpg", 14.0)]
    coco = {row["bucket"]: (row["objects"], row["matched"]) for row in report["sizes"]["coco_area"]}
    assert coco == {"small": (4, 2), "medium": (1, 1), "large": (0, 0)}
    shares = {row["bucket"]: row["objects"] for row in report["sizes"]["image_share"] if row["objects"]}
    assert shares == {"0.5-2%": 2, "2-8%": 2, "8-25%": 1}   # 64 and 196, 225 and 400, 1600 of 10000 px


def test_cli_writes_report_and_pictures(tmp_path, run_cli):
    root = write_grid_voc(tmp_path / "d")
    out = tmp_path / "out"
    result = run_cli("fit-priors", root / "net.prototxt", "--dataset", root, "-f", "voc", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "matched at the threshold: 3 (60.0%)" in result.stdout
    assert "JPEGImages/a.jpg: x 8x8 px in the image, best IoU 0.16 (prior_small)" in result.stdout
    data = json.loads((out / "coverage.json").read_text())
    assert data["totals"]["objects"] == 5 and len(data["layers"]) == 2
    for name in ("best_iou_by_size.png", "shapes_vs_priors.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("edit, words", [
    (lambda text: "\n".join(text.splitlines()[:4]), "has no PriorBox layer"),
    (lambda text: text.replace('bottom: "mbox_priorbox" top: "det"', 'bottom: "scaled" top: "det"').replace(
        'layer { name: "out"', 'layer { name: "scale" type: "Power" bottom: "mbox_priorbox" top: "scaled" }\n'
                               'layer { name: "out"'), "passes through layer 'scale' (Power)"),
    (lambda text: text.replace("dim: 1 dim: 3 dim: 100 dim: 100", "dim: 1 dim: 3"), "no input size"),
])
def test_bad_nets_are_one_line(tmp_path, run_cli, edit, words):
    root = write_grid_voc(tmp_path / "d")
    (root / "net.prototxt").write_text(edit(GRID_NET))
    result = run_cli("fit-priors", root / "net.prototxt", "--dataset", root, "-f", "voc", "--out", tmp_path / "o",
                     "--no-progress")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffessd: error:") and words in lines[0], result.stderr


def test_fit_small_size_needs_an_input_size(tmp_path):
    from caffessd.errors import CaffessdError

    net = tmp_path / "train.prototxt"
    net.write_text('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" transform_param { '
                   'resize_param { resize_mode: FIT_SMALL_SIZE height: 300 width: 300 } } }\n' + GRID_NET.split("\n", 2)[2])
    with pytest.raises(CaffessdError, match="FIT_SMALL_SIZE"):
        load_net_priors(net)
    assert load_net_priors(net, (100, 100)).input_hw == (100, 100)


def test_letterbox_places_boxes_as_fit_large_size_and_pad():
    # A 200x100 image in a 100x100 input: scaled to 100x50, padded 25 above and below.
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.75, 1.0]], np.float32)
    np.testing.assert_allclose(letterbox(boxes, 200, 100, (100, 100)),
                               [[0, 0.25, 1, 0.75], [0.5, 0.5, 0.75, 0.75]], atol=1e-7)
    np.testing.assert_allclose(letterbox(boxes, 100, 200, (100, 100)),
                               [[0.25, 0, 0.75, 1], [0.5, 0.5, 0.625, 1.0]], atol=1e-7)


@pytest.mark.parametrize("clip", [False, True])
def test_grid_shortcut_equals_brute_force_iou(tmp_path, clip):
    from caffessd.generators import SSDConfig, generate

    generate(SSDConfig(input_width=160, input_height=120, num_classes=3, clip=clip, width=0.25), tmp_path, ["deploy"])
    priors = load_net_priors(tmp_path / "deploy.prototxt")
    rng = np.random.default_rng(0)
    centre = rng.uniform(-0.1, 1.1, (3000, 2))
    side = rng.uniform(0.003, 0.9, (3000, 2))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], axis=1).astype(np.float32)
    grids = [grid_of(layer.param, layer.feature_hw, layer.image_hw) for layer in priors.layers]
    fast, layer = best_iou(boxes, grids)
    brute = jaccard(priors.boxes, boxes)
    np.testing.assert_allclose(fast, brute.max(axis=0), atol=1e-6)
    assert (priors.layer_of_prior[brute.argmax(axis=0)] == layer)[brute.max(axis=0) > 0].mean() > 0.99


def small_objects(root: Path, images: int = 150) -> Path:
    """Shapes whose box covers 2-8% of the image area (sides 14-28% of the image)."""
    return write_shapes_voc(root, {"trainval": images}, size=96, seed=2, max_objects=3, scale=(0.14, 0.28))


def test_suggest_raises_coverage_and_its_flags_rebuild_its_priors(tmp_path, run_cli):
    data = small_objects(tmp_path / "shapes")
    model = tmp_path / "model"
    made = run_cli("gen-model", "--input", 96, "--width", 0.25, "--classes", 4, "--stage", "train", "-o", model)
    assert made.returncode == 0, made.stderr
    result = fit_priors(model / "train.prototxt", open_dataset(data, "voc", "trainval"), suggest=True, progress=False)
    best = result.best
    after = result.best_coverage()
    assert after.share > result.coverage.share + 0.05, (result.coverage.share, after.share)
    methods = {s.method: c.share for s, c in result.suggestions}
    assert set(methods) == {"scale-rule", "kmeans"} and after.share == max(methods.values())
    for param, layer in zip(best.params, result.priors.layers):   # no prior smaller than its layer's step
        assert layer.feature_hw == (1, 1) or min(param.min_size) >= min(layer.step())
    rebuilt = run_cli("gen-model", "--input", 96, "--width", 0.25, "--classes", 4, "--stage", "train",
                      *best.flags, "-o", tmp_path / "suggested")
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = load_net_priors(tmp_path / "suggested" / "train.prototxt")
    np.testing.assert_array_equal(again.boxes, after.priors.boxes)
    truth = collect(open_dataset(data, "voc", "trainval"), again.input_hw, progress=False)
    assert replay(truth, again).matched == after.matched

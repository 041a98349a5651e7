"""`caffessd train` learns, end to end, as a user runs it.

scripts/train_shapes.py's recipe at a small scale, every step a `caffessd`
command in a subprocess: a generated shapes dataset (seed 0: 1000 trainval and
80 held-out test images of circles, squares and triangles, 128x128, on noisy
gradients) -> make-lmdb -> gen-model (MobileNet-SSD, width 0.5, 96x96) ->
`caffessd train` from gen-model's initial weights, 500 iterations of batch 16
(Adam 0.005, a tenth of it after 375) on the CPU -> merge-bn of the last
snapshot -> `caffessd eval` of the merged deploy net on the held-out images,
and `caffessd detect` on held-out photos.

Measured (seed 0, voc07 mAP on the 80 held-out images): gen-model's initial
weights, tested by the test solver at max_iter 0 as test.sh runs it, score
0.015 (chance); after training the test net scores 0.29 at iteration 250 and
0.586 at 500, the merged deploy net 0.585 in `caffessd eval`, and detect at
score >= 0.1 finds 43 of the 55 shapes in the first 40 held-out photos
(IoU >= 0.5, right class). The test asks for mAP >= 0.4 after training, <= 0.1
before, and detect finding at least half of those shapes. 2m10s on the 2-core
machine. The same recipe at full scale (scripts/train_shapes.py: 2000 images,
3000 iterations, 13 minutes) reaches 0.907.
"""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parent.parent


def load_recipe():
    spec = importlib.util.spec_from_file_location("train_shapes", ROOT / "scripts" / "train_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_shapes"] = module
    spec.loader.exec_module(module)
    return module


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ground_truth(xml_path: Path):
    text = xml_path.read_text()
    objects = []
    for name, box in re.findall(r"<name>(\w+)</name>.*?<xmin>(.*?)</ymax>", text):
        numbers = [float(v) for v in re.findall(r"[\d.]+", box)]
        objects.append((name, [n - 1 for n in numbers]))  # VOC's 1-based pixels
    return objects


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    recipe = load_recipe()
    work = tmp_path_factory.mktemp("shapes")
    args = recipe.parse_args(["--workdir", str(work), "--train-images", "1000", "--test-images", "80",
                              "--iterations", "500", "--test-interval", "250", "--no-int8"])
    return recipe, args, recipe.workflow(args)


def test_untrained_net_is_at_chance(trained, run_cli):
    recipe, args, result = trained
    model = result["model"]
    out = run_cli("train", model / "solver_test.prototxt", "--weights", model / "init.caffemodel", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    values = [float(v) for v in re.findall(r"detection_eval = ([\d.e-]+)", out.stderr)]
    assert len(values) == 1, out.stderr[-2000:]
    assert values[0] <= 0.1


def test_trained_net_finds_the_shapes(trained):
    _, _, result = trained
    assert result["test_maps"][-1] >= 0.4, result["test_maps"]
    assert result["eval_map"] >= 0.4, result["eval_map"]
    assert result["curves"].is_file()


def test_detect_finds_held_out_shapes(trained, run_cli, tmp_path):
    _, _, result = trained
    data, model = result["data"], result["model"]
    names = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[:40]
    out = run_cli("detect", "--model", model / "merged.prototxt", "--weights", model / "merged.caffemodel",
                  "--labels", data / "labelmap.prototxt", "--threshold", "0.1", "--out", tmp_path / "det",
                  *[data / "JPEGImages" / f"{n}.jpg" for n in names])
    assert out.returncode == 0, out.stderr[-2000:]
    found = total = 0
    for entry, name in zip(json.loads((tmp_path / "det" / "detections.json").read_text()), names):
        for label, box in ground_truth(data / "Annotations" / f"{name}.xml"):
            total += 1
            found += any(d["name"] == label and iou(d["box"], box) >= 0.5 for d in entry["detections"])
    assert found >= total / 2, (found, total)

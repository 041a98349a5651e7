"""lint-dataset: one planted defect of each kind in a generated VOC set, each
found once with its file (and line), nothing in the clean set; an LMDB with a
background-labelled box; 10,000 images streamed in flat memory; make-lmdb
printing the same summary before it starts."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from caffessd.analysis.lint import KINDS, LintOptions, lint
from caffessd.datasets import open_dataset
from caffessd.datasets.synthetic import write_shapes_voc
from conftest import ROOT
from dataset_builders import voc_xml, write_image

CLASSES = ("circle", "square", "triangle")


def clean_voc(root: Path) -> Path:
    return write_shapes_voc(root, {"trainval": 14}, size=64, seed=7, max_objects=2, scale=(0.25, 0.5))


def plant(root: Path) -> dict:
    """One defect per image: {kind: (file that must be named, line or None)}."""
    ann, img = root / "Annotations", root / "JPEGImages"

    def xml(image_id, objects, size=(64, 64)):
        path = ann / f"{image_id}.xml"
        path.write_text(voc_xml(size[0], size[1], [(n, b, False) for n, b in objects]))
        return path

    planted = {
        "bad-annotation": (ann / "000000.xml", 3),
        "non-finite": (xml("000001", [("circle", ("nan", 2, 20, 20))]), 14),
        "unreadable-image": (img / "000002.jpg", None),
        "size-mismatch": (xml("000003", [("circle", (2, 2, 20, 20))], size=(60, 64)), None),
        "inverted": (xml("000004", [("circle", (30, 2, 20, 20))]), 8),
        "empty-box": (xml("000005", [("square", (20, 2, 20, 20))]), 8),
        "outside-image": (xml("000006", [("square", (2, 2, 70, 20))]), 8),
        "normalised-units": (xml("000007", [("circle", (0.1, 0.1, 0.5, 0.4)), ("square", (0.5, 0.5, 0.9, 0.9))]), None),
        "unknown-label": (xml("000008", [("dragon", (2, 2, 30, 30))]), 8),
        "duplicate-box": (xml("000009", [("circle", (2, 2, 30, 30)), ("square", (31, 31, 60, 60)),
                                         ("circle", (2, 2, 30, 30))]), 32),
        "duplicate-image": (ann / "000010.xml", None),
        "too-small": (xml("000011", [("circle", (2, 2, 5, 5)), ("square", (10, 10, 50, 50))]), 8),
    }
    (ann / "000000.xml").write_text("<annotation>\n  <object>\n    <name>circle</oops>\n</annotation>\n")
    (img / "000002.jpg").write_bytes(b"not a jpeg at all")
    xml("000012", [])                                       # an image without objects: counted, not a problem
    listing = root / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text(listing.read_text() + "000010\n")
    return planted


@pytest.fixture()
def net(tmp_path_factory):
    from caffessd.generators import SSDConfig, generate

    folder = tmp_path_factory.mktemp("net")
    generate(SSDConfig(input_width=64, input_height=64, num_classes=4, width=0.25), folder, ["deploy"])
    return folder / "deploy.prototxt"


def test_clean_set_has_nothing_to_report(tmp_path, run_cli, net):
    root = clean_voc(tmp_path / "voc")
    result = run_cli("lint-dataset", root, "-f", "voc", "--labelmap", root / "labelmap.prototxt", "--net", net,
                     "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].endswith("0 errors, 0 warnings")
    assert not [line for line in result.stdout.splitlines() if "error:" in line or "warning:" in line]


def test_every_planted_defect_is_found_once(tmp_path, run_cli, net):
    root = clean_voc(tmp_path / "voc")
    planted = plant(root)
    assert set(planted) == set(KINDS) - {"background-label"}   # that one needs an LMDB (below)
    result = run_cli("lint-dataset", root, "-f", "voc", "--labelmap", root / "labelmap.prototxt", "--net", net,
                     "--no-progress")
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if ": error: " in line or ": warning: " in line]
    found = {}
    for line in problems:
        kind = line.rsplit("[", 1)[1].rstrip("]")
        found.setdefault(kind, []).append(line)
    assert sorted(found) == sorted(planted), problems
    for kind, (path, line) in planted.items():
        (text,) = found[kind]
        where = f"{path}:{line}:" if line is not None else f"{path}:"
        assert text.startswith(where), (kind, text)
        assert f": {KINDS[kind]}: " in text
    summary = result.stdout.splitlines()[len(problems):]
    assert "images without objects: 1 (JPEGImages/000012.jpg)" in "\n".join(summary)
    assert any(line.split()[:1] == ["circle"] for line in summary)
    assert "Traceback" not in result.stderr


def test_background_label_in_an_lmdb(tmp_path, run_cli):
    from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb

    root = clean_voc(tmp_path / "voc")
    make_lmdb(open_dataset(root, "voc", "trainval"), tmp_path / "db", {"circle": 0, "square": 2, "triangle": 3},
              ConvertOptions(), progress=False)
    result = run_cli("lint-dataset", tmp_path / "db", "-f", "lmdb", "--no-progress")
    assert result.returncode == 1
    kinds = {line.rsplit("[", 1)[1].rstrip("]") for line in result.stdout.splitlines() if ": error: " in line}
    assert kinds == {"background-label"}


def test_make_lmdb_prints_the_same_summary_first(tmp_path, run_cli):
    root = clean_voc(tmp_path / "voc")
    xml = root / "Annotations" / "000004.xml"
    xml.write_text(voc_xml(64, 64, [("circle", (2, 2, 20, 20), False), ("circle", (2, 2, 20, 20), False)]))
    result = run_cli("make-lmdb", root, "-f", "voc", "-o", tmp_path / "db")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dataset check: 14 images") and "0 errors, 1 warnings" in lines[0]
    assert any(line.startswith(f"{xml}:") and line.endswith("[duplicate-box]") for line in lines)
    quiet = run_cli("make-lmdb", root, "-f", "voc", "-o", tmp_path / "db2", "--no-lint")
    assert "dataset check" not in quiet.stdout


STREAM = textwrap.dedent("""
    import json, sys, tracemalloc
    sys.path.insert(0, sys.argv[2])
    from caffessd.analysis.lint import LintOptions, lint
    from caffessd.datasets import open_dataset
    dataset = open_dataset(sys.argv[1], "coco", "val2017")
    read, first, peaks = [0], [], {}
    def records():
        for record in dataset:
            read[0] += 1
            if read[0] in (1000, len(dataset)):
                peaks[read[0]] = tracemalloc.get_traced_memory()[1] - base
            yield record
    class Stream:
        def __iter__(self): return records()
        def __len__(self): return len(dataset)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    summary = lint(Stream(), LintOptions(), lambda p: first.append(read[0]) if not first else None, progress=False)
    print(json.dumps({"images": summary.images, "errors": summary.errors, "first": first[0], "peaks": peaks}))
""")


def test_ten_thousand_images_stream_in_flat_memory(tmp_path):
    """COCO JSON of 10,000 images of 10 boxes each (hard links to one JPEG, each
    header read): the first problem is printed as soon as its image is read,
    and what lint adds to memory (tracemalloc peak) grows by under 400 bytes
    an image from the 1,000th image to the 10,000th, where keeping the
    records would take kilobytes an image."""
    import json
    import os

    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    write_image(root / "one.jpg", 32, 32, seed=0)
    images, annotations = [], []
    for i in range(10000):
        os.link(root / "one.jpg", root / "val2017" / f"{i:05d}.jpg")
        images.append({"id": i, "file_name": f"{i:05d}.jpg", "width": 32, "height": 32})
        for k in range(10):
            box = [40, 1, 5, 5] if i == k == 0 else [1 + k, 1, 10 + i % 10, 10]   # image 0: one outside the image
            annotations.append({"id": 10 * i + k, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": 0})
    text = json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]})
    (root / "annotations" / "instances_val2017.json").write_text(text)
    out = subprocess.run([sys.executable, "-c", STREAM, str(root), str(ROOT)], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    assert result["images"] == 10000 and result["errors"] == 1 and result["first"] == 1
    peaks = {int(k): v for k, v in result["peaks"].items()}
    assert peaks[10000] < peaks[1000] + 9000 * 400, peaks    # the seen-image digests: ~60 bytes an image


def test_lint_api_counts_classes():
    from caffessd.datasets.records import BoxObject, ImageRecord

    records = [ImageRecord("a.jpg", Path("a.jpg"), 10, 10, (BoxObject("x", (1, 1, 5, 5)), BoxObject("y", (2, 2, 6, 6)))),
               ImageRecord("b.jpg", Path("b.jpg"), 10, 10, (BoxObject("x", (1, 1, 5, 5), difficult=True),))]
    summary = lint(records, LintOptions(check_images=False), progress=False)
    assert (summary.images, summary.objects, summary.errors) == (2, 3, 0)
    assert summary.classes == {"x": 2, "y": 1} and summary.class_images == {"x": 2, "y": 1}
    assert summary.difficult == {"x": 1}

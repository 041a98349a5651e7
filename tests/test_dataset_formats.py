"""YOLO txt, Open Images CSV, CVAT for images XML and LabelMe JSON: a generated
VOC set written in each format (tests/format_writers.py, from the formats'
own descriptions) and read back gives the VOC records (boxes within 1e-9 px:
the normalised formats divide and multiply by the image size), and make-lmdb
from it writes the same AnnotatedDatum values, byte for byte, as make-lmdb
from the VOC original. Then each format's own features and its bad input:
one line naming the file (and line), paths that leave the dataset refused."""
from pathlib import Path

import lmdb
import numpy as np
import pytest

from caffessd.datasets import open_dataset
from caffessd.datasets.labelmap import labelmap_from_dataset, name_to_label
from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb
from caffessd.datasets.synthetic import SHAPES, write_shapes_voc
from caffessd.errors import CaffessdError, FormatError
from format_writers import write_cvat, write_labelme, write_openimages, write_yolo

EMPTY_ID = "000009"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """12 images of shapes (objects in every one but the image EMPTY_ID)."""
    root = tmp_path_factory.mktemp("formats") / "voc"
    write_shapes_voc(root, {"trainval": 12}, size=64, seed=5, max_objects=3, scale=(0.15, 0.5))
    (root / "Annotations" / f"{EMPTY_ID}.xml").write_text(
        f"<annotation><filename>{EMPTY_ID}.jpg</filename><size><width>64</width><height>64</height>"
        "<depth>3</depth></size></annotation>\n")
    records = list(open_dataset(root, "voc", "trainval"))
    assert sum(1 for r in records if not r.objects) == 1 and sum(len(r.objects) for r in records) > 15
    return root, records


def summary(records):
    return [(r.width, r.height, [(o.label, o.box, o.difficult, o.ignore) for o in r.objects]) for r in records]


def assert_same_records(got, expected):
    assert len(got) == len(expected)
    for (w, h, objects), (ew, eh, eobjects) in zip(summary(got), summary(expected)):
        assert (w, h) == (ew, eh)
        assert [o[0] for o in objects] == [o[0] for o in eobjects]
        assert [o[2:] for o in objects] == [o[2:] for o in eobjects]
        if objects:
            np.testing.assert_allclose([o[1] for o in objects], [o[1] for o in eobjects], rtol=0, atol=1e-9)


def lmdb_values(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = [(key.decode().split("_", 1)[0], value) for key, value in txn.cursor()]
    env.close()
    return items


def written(dataset, out):
    label_of = name_to_label(labelmap_from_dataset(type("C", (), {"classes": SHAPES})()), None)
    summary = make_lmdb(dataset, out, label_of, ConvertOptions(), progress=False, workers=1)
    assert not summary.skipped
    return lmdb_values(out)


def write_format(name, records, out):
    if name == "yolo":
        return write_yolo(records, SHAPES, out), "train"
    if name == "yolo-darknet":
        return write_yolo(records, SHAPES, out, style="darknet"), None
    if name == "openimages":
        return write_openimages(records, SHAPES, out), "validation"
    if name == "cvat":
        return write_cvat(records, SHAPES, out), None
    return write_labelme(records, out), None


@pytest.mark.parametrize("name", ["yolo", "yolo-darknet", "openimages", "cvat", "labelme"])
def test_round_trip_and_make_lmdb_equal_to_voc(voc, tmp_path, name):
    root, records = voc
    folder, split = write_format(name, records, tmp_path / name)
    fmt = name.split("-")[0]
    dataset = open_dataset(folder, fmt, split)
    expected = [r for r in records if r.objects] if fmt == "openimages" else records  # the CSV lists images with boxes
    got = list(dataset)
    assert_same_records(got, expected)
    assert [Path(r.path).name for r in got] == [Path(r.path).name for r in expected]
    assert set(dataset.classes) <= set(SHAPES)
    voc_db = written(open_dataset(root, "voc", "trainval"), tmp_path / "voc_lmdb")
    if fmt == "openimages":
        keep = [i for i, r in enumerate(records) if r.objects]
        voc_db = [voc_db[i] for i in keep]
    fmt_db = written(dataset, tmp_path / f"{name}_lmdb")
    assert [v for _, v in fmt_db] == [v for _, v in voc_db]


def test_make_lmdb_cli_with_images_and_annotations_options(voc, tmp_path, run_cli):
    """The layout options: YOLO labels and images in folders of the user's choosing."""
    _, records = voc
    source = write_yolo(records, SHAPES, tmp_path / "y")
    moved = tmp_path / "elsewhere"
    (source / "images" / "train").rename(moved)
    labels = tmp_path / "my_labels"
    (source / "labels" / "train").rename(labels)
    out = tmp_path / "db"
    result = run_cli("make-lmdb", source, "-f", "yolo", "--images", moved, "--annotations", labels, "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(records)} images, {sum(len(r.objects) for r in records)} boxes" in result.stdout


def test_yolo_segments_classes_txt_and_yaml_lists(tmp_path):
    from dataset_builders import write_image

    root = tmp_path / "seg"
    write_image(root / "images" / "val" / "a.jpg", 40, 20, seed=1)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "a.txt").write_text("1 0.1 0.2 0.5 0.1 0.3 0.9\n\n0 0.5 0.5 0.5 0.5\n")
    (root / "val.txt").write_text("./images/val/a.jpg\n")
    (root / "data.yaml").write_text("path: .\nval: val.txt\nnames: [cat, dog]\nnc: 2\n")
    record = next(iter(open_dataset(root, "yolo", "val")))
    assert record.name == "images/val/a.jpg" and (record.width, record.height) == (40, 20)
    assert record.objects[0].label == "dog"
    np.testing.assert_allclose(record.objects[0].box, (0.1 * 40, 0.1 * 20, 0.5 * 40, 0.9 * 20), atol=1e-12)
    np.testing.assert_allclose(record.objects[1].box, (10, 5, 30, 15), atol=1e-12)
    assert record.objects[1].attributes["line"] == 3


@pytest.mark.parametrize("text, line, words", [
    ("3 0.5 0.5 0.1 0.1\n", 1, "class '3' is not an id from 0 to 1"),
    ("0 0.5 0.5 0.1\n", 1, "expected `class cx cy w h`"),
    ("0 0.5 nan 0.1 0.1\n", 1, "finite number"),
    ("0 0.5 0.5 0.1 0.1\n1 x 0.5 0.1 0.1\n", 2, "expected a number"),
])
def test_yolo_bad_label_lines(tmp_path, text, line, words):
    from dataset_builders import write_image

    write_image(tmp_path / "a.jpg", 8, 8, seed=0)
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(FormatError) as info:
        list(open_dataset(tmp_path, "yolo"))
    assert info.value.line == line and words in str(info.value) and "a.txt" in str(info.value)


@pytest.mark.parametrize("yaml_text, words", [
    ("names: [a]\ntrain: ../../etc\n", "climbs out with '..' outside the dataset folder"),
    ("names: [a]\ntrain: /etc\n", "is an absolute path outside the dataset folder"),
    ("names: {0: a, 2: b}\ntrain: images\n", "without gaps"),
    ("names: [a]\nval: images\n", "has no split 'train'"),
    ("names: [a, b]\nnc: 3\ntrain: images\n", "`nc` is 3"),
    ("names: [a\n", "malformed YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_yolo_bad_data_yaml(tmp_path, yaml_text, words):
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(FormatError) as info:
        len(open_dataset(tmp_path, "yolo", "train"))
    assert words in str(info.value) and "data.yaml" in str(info.value)


def test_yolo_image_list_leaving_root_refused(tmp_path):
    (tmp_path / "train.txt").write_text("images/a.jpg\n../../secret.jpg\n")
    (tmp_path / "data.yaml").write_text("names: [a]\ntrain: train.txt\n")
    with pytest.raises(FormatError) as info:
        len(open_dataset(tmp_path, "yolo", "train"))
    assert "train.txt:2" in str(info.value) and "outside the dataset folder" in str(info.value)
    assert len(open_dataset(tmp_path, "yolo", "train", allow_outside=True)) == 2   # --allow-outside-root


def test_openimages_group_of_index_and_bad_rows(voc, tmp_path):
    _, records = voc
    folder = write_openimages(records[:2], SHAPES, tmp_path / "oi")
    csv_path = folder / "validation-annotations-bbox.csv"
    lines = csv_path.read_text().splitlines()
    first_id = records[0].path.stem
    # A group-of box for the first image, after the second image's rows (non-contiguous rows still join).
    lines.append(f"{first_id},xclick,/m/00000,1,0.1,0.5,0.2,0.6,0,0,1,0,0")
    csv_path.write_text("\n".join(lines) + "\n")
    dataset = open_dataset(folder, "openimages")
    assert dataset.entries() == [first_id, records[1].path.stem]
    first = dataset.record(first_id)
    assert len(first.objects) == len(records[0].objects) + 1
    group = first.objects[-1]
    assert group.ignore and group.difficult and group.label == "circle" and group.attributes["line"] == len(lines)
    np.testing.assert_allclose(group.box, (0.1 * 64, 0.2 * 64, 0.5 * 64, 0.6 * 64), atol=1e-12)
    csv_path.write_text("\n".join(lines[:1] + ["../../etc/passwd,x,/m/00000,1,0,1,0,1,0,0,0,0,0"]) + "\n")
    with pytest.raises(FormatError, match="outside the dataset folder"):
        list(open_dataset(folder, "openimages"))
    csv_path.write_text("ImageID,LabelName,XMin\n")
    with pytest.raises(FormatError, match="the header lacks XMax, YMin, YMax"):
        open_dataset(folder, "openimages")
    csv_path.write_text(lines[0] + "\nabc,xclick,/m/0\n")
    with pytest.raises(FormatError) as info:
        open_dataset(folder, "openimages")
    assert info.value.line == 2 and "expected 13 fields" in str(info.value)


def test_cvat_subsets_rotation_and_meta_labels(tmp_path):
    from dataset_builders import write_image

    write_image(tmp_path / "images" / "a.jpg", 100, 80, seed=2)
    write_image(tmp_path / "images" / "b.jpg", 100, 80, seed=3)
    (tmp_path / "annotations.xml").write_text(
        '<annotations><version>1.1</version><meta><project><labels><label><name>zebra</name></label>'
        '<label><name>ant</name></label></labels></project></meta>\n'
        '<image id="0" name="a.jpg" width="100" height="80" subset="Train">\n'
        '  <box label="ant" xtl="10" ytl="20" xbr="30" ybr="60" rotation="90" occluded="1"/>\n'
        '  <polygon label="zebra" points="1,2;3,4;5,1"/>\n'
        '</image>\n<image id="1" name="b.jpg" width="100" height="80" subset="Validation">'
        '<box label="bee" xtl="1" ytl="2" xbr="3" ybr="4"/></image></annotations>\n')
    train = open_dataset(tmp_path, "cvat", "train")
    assert train.classes == ("zebra", "ant")
    (record,) = list(train)
    (obj,) = record.objects
    np.testing.assert_allclose(obj.box, (0, 30, 40, 50), atol=1e-9)   # 20x40 turned a quarter: 40x20 about (20, 40)
    assert obj.attributes["occluded"] and obj.attributes["line"] == 3
    everything = open_dataset(tmp_path, "cvat")
    assert everything.classes == ("zebra", "ant", "bee") and len(everything) == 2


@pytest.mark.parametrize("body, words, line", [
    ('<image id="0" name="../../etc/passwd" width="4" height="4"/>', "outside the dataset folder", 1),
    ('<image id="0" name="a.jpg" width="4" height="4"><box label="x" xtl="1" ytl="1" xbr="q" ybr="2"/></image>',
     "expected a number", 1),
    ('<image id="0" name="a.jpg" width="0" height="4"/>', "positive integer", 1),
])
def test_cvat_bad_input(tmp_path, body, words, line):
    (tmp_path / "annotations.xml").write_text(f"<annotations>{body}</annotations>")
    with pytest.raises(FormatError) as info:
        list(open_dataset(tmp_path, "cvat"))
    assert words in str(info.value) and info.value.line == line and "annotations.xml" in str(info.value)


def test_cvat_entities_are_refused(tmp_path):
    """The same guarded XML reader as VOC: no entity declarations (billion laughs)."""
    laughs = ['<!ENTITY a0 "ha">'] + [f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 9)]
    (tmp_path / "annotations.xml").write_text(f'<?xml version="1.0"?>\n<!DOCTYPE annotations [{"".join(laughs)}]>\n'
                                              '<annotations><image id="0" name="&a8;.jpg" width="4" height="4"/>'
                                              '</annotations>\n')
    with pytest.raises(FormatError) as info:
        open_dataset(tmp_path, "cvat")
    assert "refused" in str(info.value) and "annotations.xml" in str(info.value)


def test_yolo_roboflow_split_paths(tmp_path):
    """Roboflow's data.yaml says `train: ../train/images` from inside the dataset folder."""
    from dataset_builders import write_image

    write_image(tmp_path / "train" / "images" / "a.jpg", 16, 16, seed=3)
    (tmp_path / "train" / "labels").mkdir()
    (tmp_path / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['dot']\n")
    (record,) = list(open_dataset(tmp_path, "yolo", "train"))
    assert record.name == "train/images/a.jpg" and record.objects[0].box == (4.0, 4.0, 12.0, 12.0)


def test_cvat_wrong_root_and_tracks(tmp_path):
    (tmp_path / "annotations.xml").write_text("<annotation><object/></annotation>")
    with pytest.raises(FormatError, match="expected <annotations>"):
        open_dataset(tmp_path, "cvat")
    (tmp_path / "annotations.xml").write_text('<annotations><track id="0" label="a"/></annotations>')
    with pytest.raises(FormatError, match="export as CVAT for images"):
        open_dataset(tmp_path, "cvat")


def test_labelme_shapes_and_labels_txt(tmp_path):
    import json

    from dataset_builders import write_image

    write_image(tmp_path / "a.jpg", 50, 40, seed=4)
    shapes = [{"label": "b", "points": [[30, 20], [10, 5]], "shape_type": "rectangle", "flags": {"difficult": True}},
              {"label": "a", "points": [[1, 2], [9, 4], [5, 12]], "shape_type": "polygon", "flags": {}},
              {"label": "a", "points": [[20, 20], [23, 24]], "shape_type": "circle"},
              {"label": "a", "points": [[1, 1]], "shape_type": "point"}]
    (tmp_path / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.jpg", "imageWidth": 50,
                                                 "imageHeight": 40}))
    dataset = open_dataset(tmp_path, "labelme")
    assert dataset.classes == ("a", "b")
    (record,) = list(dataset)
    assert [o.box for o in record.objects] == [(10, 5, 30, 20), (1, 2, 9, 12), (15, 15, 25, 25)]
    assert [o.difficult for o in record.objects] == [True, False, False]
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nb\na\n")
    assert open_dataset(tmp_path, "labelme").classes == ("b", "a")


@pytest.mark.parametrize("data, words", [
    ({"shapes": [], "imagePath": "../../../etc/passwd", "imageWidth": 4, "imageHeight": 4}, "outside the dataset"),
    ({"shapes": [], "imagePath": "/etc/passwd", "imageWidth": 4, "imageHeight": 4}, "outside the dataset"),
    ({"shapes": [], "imagePath": "a\u0000.jpg", "imageWidth": 4, "imageHeight": 4}, "NUL byte"),
    ({"shapes": [{"label": "a", "points": [[1, 1]], "shape_type": "rectangle"}], "imagePath": "a.jpg",
      "imageWidth": 4, "imageHeight": 4}, "two corner points"),
    ({"shapes": [], "imagePath": "a.jpg", "imageWidth": 4.5, "imageHeight": 4}, "positive integer"),
    ({"shapes": [], "imagePath": "a.jpg", "imageWidth": 1e400, "imageHeight": 4}, "positive integer"),
    ({"shapes": "x"}, "no \"shapes\" list"),
])
def test_labelme_bad_input(tmp_path, data, words):
    import json

    (tmp_path / "a.json").write_text(json.dumps(data).replace("Infinity", "1e400"))
    with pytest.raises(FormatError) as info:
        list(open_dataset(tmp_path, "labelme"))
    assert words in str(info.value) and "a.json" in str(info.value)


def test_deep_json_and_garbage_are_one_line(tmp_path):
    (tmp_path / "a.json").write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(FormatError, match="nested too deeply|no \"shapes\""):
        list(open_dataset(tmp_path, "labelme"))
    (tmp_path / "a.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(FormatError, match="not UTF-8"):
        list(open_dataset(tmp_path, "labelme"))


def test_layout_options_refused_where_they_do_not_apply(tmp_path):
    (tmp_path / "list.txt").write_text("")
    with pytest.raises(CaffessdError, match="do not apply to --format list"):
        open_dataset(tmp_path / "list.txt", "list", images=tmp_path)

"""make-lmdb / inspect-lmdb end to end: LMDBs written from small on-the-fly
datasets, read back with the `lmdb` package and the reference schema
(caffessd.caffe_pb2.AnnotatedDatum), every field checked against the source
annotations by a second, loop-for-loop transcription of the SSD fork's
ReadXMLToAnnotatedDatum; pixels checked against OpenCV (cv2.imdecode,
cv2.resize INTER_LINEAR)."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import lmdb
import numpy as np
import pytest

from caffessd import caffe_pb2
from caffessd.datasets import open_dataset
from caffessd.datasets.lmdb_reader import LmdbDataset
from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb
from caffessd.datasets.voc import VOC_CLASSES
from conftest import ROOT
from dataset_builders import make_coco, make_kitti, make_voc, make_wider, voc_xml, write_image

VOC_LABELS = {name: index for index, name in enumerate(VOC_CLASSES, start=1)}


def read_entries(path):
    """[(key, AnnotatedDatum)] in key order, straight from LMDB."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = []
        for key, value in txn.cursor():
            datum = caffe_pb2.AnnotatedDatum()
            datum.ParseFromString(value)
            items.append((key.decode(), datum))
    env.close()
    return items


def expected_groups(objects, label_of, width, height):
    """The SSD fork's grouping, transcribed: find the group of the label,
    instance_id = last instance in it + 1, else a new group at 0; boxes are
    float(coordinate) / size."""
    groups = []
    for name, box, difficult in objects:
        label = label_of[name]
        group = next((g for g in groups if g[0] == label), None)
        if group is None:
            group = (label, [])
            groups.append(group)
        instance = group[1][-1][0] + 1 if group[1] else 0
        f = np.float32
        group[1].append((instance, (f(box[0]) / f(width), f(box[1]) / f(height), f(box[2]) / f(width),
                                    f(box[3]) / f(height)), difficult))
    return groups


def actual_groups(datum):
    return [(g.group_label, [(a.instance_id, (np.float32(a.bbox.xmin), np.float32(a.bbox.ymin), np.float32(a.bbox.xmax),
                                             np.float32(a.bbox.ymax)), a.bbox.difficult) for a in g.annotation])
            for g in datum.annotation_group]


def cv2_bgr(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def test_voc_keep_original_every_field(tmp_path, run_cli):
    truth = make_voc(tmp_path / "voc")
    out = tmp_path / "lmdb" / "VOC0712_test_lmdb"
    result = run_cli("make-lmdb", tmp_path / "voc", "-f", "voc", "-s", "test", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 images, 3 boxes" in result.stdout and "img/s" in result.stderr
    entries = read_entries(out)
    assert [key for key, _ in entries] == ["00000000_VOC2007/JPEGImages/000003.jpg", "00000001_VOC2007/JPEGImages/000001.jpg"]
    labelmap = caffe_pb2.LabelMap()
    from google.protobuf import text_format
    text_format.Parse((out.parent / "labelmap.prototxt").read_text(), labelmap)
    assert [(i.name, i.label) for i in labelmap.item] == [("none_of_the_above", 0)] + list(VOC_LABELS.items())
    for key, datum in entries:
        name = key[9:]
        pixels, width, height, objects = truth[name]
        source = tmp_path / "voc" / name
        assert datum.type == caffe_pb2.AnnotatedDatum.BBOX
        d = datum.datum
        assert (d.channels, d.height, d.width, d.label, d.encoded) == (3, height, width, -1, True)
        assert d.data == source.read_bytes()  # the file's own bytes
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_COLOR), cv2_bgr(source))
        assert actual_groups(datum) == expected_groups(objects, VOC_LABELS, width, height)
        assert not datum.datum.float_data
    assert (out.parent / "VOC0712_test_lmdb_name_size.txt").read_text() == "000003 40 40\n000001 48 64\n"
    # instance ids count within a group: dog 0, person 0, dog 1
    assert [(g.group_label, [a.instance_id for a in g.annotation]) for g in entries[1][1].annotation_group] == [
        (VOC_LABELS["dog"], [0, 1]), (VOC_LABELS["person"], [0])]


def test_voc_trainval_shuffled_and_read_back(tmp_path):
    truth = make_voc(tmp_path / "voc")
    dataset = open_dataset(tmp_path / "voc", "voc", "trainval")
    first = make_lmdb(dataset, tmp_path / "a", VOC_LABELS, shuffle=True, seed=3, progress=False)
    make_lmdb(dataset, tmp_path / "b", VOC_LABELS, shuffle=True, seed=3, progress=False, workers=0)
    assert first.written == 3 and first.objects == 8
    a, b = read_entries(tmp_path / "a"), read_entries(tmp_path / "b")
    assert [(k, d.SerializeToString()) for k, d in a] == [(k, d.SerializeToString()) for k, d in b]
    names = [key[9:] for key, _ in a]
    assert sorted(names) == sorted(r.name for r in dataset) and names != [r.name for r in dataset]
    assert [key[:9] for key, _ in a] == ["00000000_", "00000001_", "00000002_"]
    # The LMDB reader yields the source records back (labels named through the labelmap).
    back = LmdbDataset(tmp_path / "a", labelmap={v: k for k, v in VOC_LABELS.items()})
    assert len(back) == 3
    by_name = {r.name: r for r in dataset}
    for record in back:
        source = by_name[record.name]
        assert (record.width, record.height) == (source.width, source.height)
        order = sorted(source.objects, key=lambda o: [x.label for x in source.objects].index(o.label))
        assert [(o.label, o.difficult) for o in record.objects] == [(o.label, o.difficult) for o in order]
        for got, want in zip(record.objects, order):
            np.testing.assert_allclose(got.box, want.box, rtol=1e-6)
        np.testing.assert_array_equal(back.load_image(record), truth[record.name][0])


@pytest.mark.parametrize("encode", ["png", "none", "jpg"])
def test_resize_matches_cv2_inter_linear(tmp_path, run_cli, encode):
    truth = make_voc(tmp_path / "voc")
    out = tmp_path / "resized"
    result = run_cli("make-lmdb", tmp_path / "voc", "-f", "voc", "-s", "trainval", "-o", out, "--resize", "30x22",
                     "--encode", encode, "--check-size")
    assert result.returncode == 0, result.stderr
    for key, datum in read_entries(out):
        d = datum.datum
        assert (d.channels, d.height, d.width, d.encoded) == (3, 22, 30, encode != "none")
        if encode == "none":
            got = np.frombuffer(d.data, np.uint8).reshape(3, 22, 30).transpose(1, 2, 0)
        else:
            got = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_COLOR)
            assert d.data[:2] == (b"\xff\xd8" if encode == "jpg" else b"\x89P")
        want = cv2.resize(cv2_bgr(tmp_path / "voc" / key[9:]), (30, 22), interpolation=cv2.INTER_LINEAR)
        if encode == "jpg":  # lossy: compare with OpenCV's own JPEG (quality 95, cv::imencode's default)
            want = cv2.imdecode(cv2.imencode(".jpg", want)[1], cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(got, want)  # same libjpeg settings: identical here
        else:
            assert np.abs(got.astype(int) - want).max() <= 1
        _, width, height, objects = truth[key[9:]]
        assert actual_groups(datum) == expected_groups(objects, VOC_LABELS, width, height)  # normalised: size-free


def test_min_max_dim_and_gray(tmp_path):
    make_voc(tmp_path / "voc")
    dataset = open_dataset(tmp_path / "voc", "voc", "trainval")
    make_lmdb(dataset, tmp_path / "dim", VOC_LABELS, ConvertOptions(min_dim=60, max_dim=80, encode="png"), progress=False)
    for key, datum in read_entries(tmp_path / "dim"):
        image = cv2_bgr(tmp_path / "voc" / key[9:])
        rows, cols = image.shape[:2]
        scale = np.float32(60) / np.float32(min(rows, cols)) if min(rows, cols) < 60 else np.float32(1)
        if int(scale * np.float32(max(rows, cols))) > 80:
            scale = np.float32(80) / np.float32(max(rows, cols))
        by_factor = image if scale == 1 else cv2.resize(image, (0, 0), fx=float(scale), fy=float(scale))
        got = cv2.imdecode(np.frombuffer(datum.datum.data, np.uint8), cv2.IMREAD_COLOR)
        assert got.shape == by_factor.shape  # convert_annoset's size
        by_size = cv2.resize(image, got.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        assert np.abs(got.astype(int) - by_size).max() <= 1
        # cv2 maps pixels by 1/fx where we use the size ratio: a few levels apart at most
        assert np.abs(got.astype(int) - by_factor).max() <= 4
    make_lmdb(dataset, tmp_path / "gray", VOC_LABELS, ConvertOptions(gray=True), progress=False)
    for key, datum in read_entries(tmp_path / "gray"):
        d = datum.datum
        assert d.channels == 1 and d.data == (tmp_path / "voc" / key[9:]).read_bytes()  # as ReadImageToDatum keeps it
        entry = LmdbDataset(tmp_path / "gray").get(key)
        assert entry.image().ndim == 2


def test_coco_with_the_published_91_class_labelmap(tmp_path, run_cli):
    data = make_coco(tmp_path / "coco")
    labelmap = ROOT / "tests" / "data" / "labelmap_coco_chuanqi305.prototxt"
    out = tmp_path / "coco_lmdb"
    result = run_cli("make-lmdb", tmp_path / "coco", "-f", "coco", "-s", "val2017", "-o", out, "--labelmap", labelmap,
                     "--check-label")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "labelmap.prototxt").exists()  # given, not written
    entries = read_entries(out)
    assert [k for k, _ in entries] == ["00000000_val2017/a.jpg", "00000001_val2017/b.png", "00000002_val2017/c.jpg"]
    sizes = {i["id"]: (i["width"], i["height"]) for i in data["images"]}
    for (key, datum), image in zip(entries, data["images"]):
        width, height = sizes[image["id"]]
        objects = []
        for ann in (a for a in data["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            objects.append((ann["category_id"], (np.float32(x), np.float32(y), np.float32(x) + np.float32(w),
                                                 np.float32(y) + np.float32(h)), bool(ann["iscrowd"])))
        # group labels are the COCO category ids themselves (91-class layout); crowd -> difficult
        assert actual_groups(datum) == expected_groups(objects, {c: c for c in range(91)}, width, height)
        assert datum.datum.data == (tmp_path / "coco" / key[9:]).read_bytes()


def test_coco_with_the_forks_category_id_labelmap(tmp_path):
    """weiliu89's data/coco/labelmap_coco.prototxt names items by category id
    ("1" display "person") and numbers them 1..80: ids map through it."""
    make_coco(tmp_path / "coco")
    dataset = open_dataset(tmp_path / "coco", "coco", "val2017")
    label_of = {"1": 1, "3": 3, "13": 12, "90": 80}
    make_lmdb(dataset, tmp_path / "o", label_of, ConvertOptions(check_label=True), progress=False)
    entries = read_entries(tmp_path / "o")
    assert [g.group_label for g in entries[0][1].annotation_group] == [1, 12]
    assert [g.group_label for g in entries[1][1].annotation_group] == [80]


def test_wider_and_kitti_ignore_regions(tmp_path, run_cli):
    make_wider(tmp_path / "wider")
    result = run_cli("make-lmdb", tmp_path / "wider", "-f", "wider", "-s", "val", "-o", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    assert "left out 1 ignore regions" in result.stdout  # the zero-width face
    (_, first), (_, empty), _ = read_entries(tmp_path / "w")
    assert [(a.bbox.difficult, round(a.bbox.xmin * 48, 3)) for a in first.annotation_group[0].annotation] == [
        (False, 4.0), (True, 30.0)]  # invalid face kept as difficult
    assert not empty.annotation_group
    assert (tmp_path / "w_name_size.txt").read_text().splitlines()[0] == "0_Parade_1 40 48"
    result = run_cli("make-lmdb", tmp_path / "wider", "-f", "wider", "-o", tmp_path / "w2", "--ignored", "drop",
                     "--labelmap", tmp_path / "labelmap.prototxt")
    assert result.returncode == 0 and "left out 2 ignore regions" in result.stdout
    make_kitti(tmp_path / "kitti")
    result = run_cli("make-lmdb", tmp_path / "kitti", "-f", "kitti", "-o", tmp_path / "k" / "kitti_lmdb")
    assert result.returncode == 0, result.stderr
    assert "left out 1 ignore regions" in result.stdout  # DontCare has no label
    (_, a), (_, b) = read_entries(tmp_path / "k" / "kitti_lmdb")
    assert [g.group_label for g in a.annotation_group] == [4]  # Pedestrian
    assert [g.group_label for g in b.annotation_group] == [1, 6]  # Car, Cyclist
    assert a.datum.data[:4] == b"\x89PNG"


def test_list_files_xml_json_txt(tmp_path, run_cli):
    make_voc(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(
        {"image": {"width": 64, "height": 48}, "annotation": [{"category_id": 2, "iscrowd": 1, "bbox": [1.5, 2, 3, 4]}]}))
    (tmp_path / "a.txt").write_text("3 1 2 30 40\n2 3.5 4 5 6\n3 4 4 8 8\n")
    (tmp_path / "labelmap.prototxt").write_text("".join(
        f'item {{ name: "{n}" label: {i} display_name: "{d}" }}\n' for n, i, d in
        [("none_of_the_above", 0, "background"), ("1", 1, "person"), ("2", 2, "bicycle"), ("3", 3, "car")]))
    listing = tmp_path / "trainval.txt"
    listing.write_text("VOC2007/JPEGImages/000001.jpg a.json\nVOC2007/JPEGImages/000002.jpg a.txt\n")
    result = run_cli("make-lmdb", listing, "-f", "list", "-o", tmp_path / "l")
    assert result.returncode == 0, result.stderr
    (_, js), (_, txt) = read_entries(tmp_path / "l")
    assert actual_groups(js) == expected_groups([("2", (1.5, 2, 4.5, 6), True)], {"2": 2}, 64, 48)
    assert actual_groups(txt) == expected_groups([("3", (1, 2, 30, 40), False), ("2", (3.5, 4, 5, 6), False),
                                                  ("3", (4, 4, 8, 8), False)], {"2": 2, "3": 3}, 50, 70)
    # xml list lines with VOC names need VOC's labelmap: an unknown label is listed and skipped
    listing.write_text("VOC2007/JPEGImages/000001.jpg VOC2007/Annotations/000001.xml\n")
    result = run_cli("make-lmdb", listing, "-f", "list", "-o", tmp_path / "x")
    assert result.returncode == 0 and "labels not in the labelmap: dog (2), person (1)" in result.stdout
    assert not read_entries(tmp_path / "x")[0][1].annotation_group


def _bad_voc(tmp_path, case):
    make_voc(tmp_path / "voc")
    folder = tmp_path / "voc" / "VOC2007"
    xml = folder / "Annotations" / "000002.xml"
    if case == "missing image":
        (folder / "JPEGImages" / "000002.jpg").unlink()
        return folder / "JPEGImages" / "000002.jpg", "no such file"
    if case == "undecodable":
        (folder / "JPEGImages" / "000002.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
        return folder / "JPEGImages" / "000002.jpg", "cannot decode image"
    if case == "decompression bomb":
        from test_imageread import bomb_png

        (folder / "JPEGImages" / "000002.jpg").write_bytes(bomb_png(30000, 30000))
        return folder / "JPEGImages" / "000002.jpg", "more than the limit"
    boxes = {"outside": ("car", (1, 1, 51, 70), False), "inverted": ("car", (30, 1, 20, 70), False),
             "label": ("spaceship", (1, 1, 5, 5), False)}
    if case == "size":
        xml.write_text(voc_xml(50, 71, [("car", (1, 1, 50, 70), False)]))
        return xml, "annotation says 50x71, the image is 50x70"
    xml.write_text(voc_xml(50, 70, [boxes[case]]))
    words = {"outside": "outside the 50x70 image", "inverted": "xmin >= xmax",
             "label": "label 'spaceship' is not in the labelmap"}[case]
    return xml, words


@pytest.mark.parametrize("case", ["missing image", "undecodable", "decompression bomb", "outside", "inverted",
                                  "label", "size"])
def test_bad_input_stops_or_is_skipped(tmp_path, run_cli, case):
    named, words = _bad_voc(tmp_path, case)
    out = tmp_path / "out" / "bad_lmdb"
    voc_labelmap = tmp_path / "labelmap_voc.prototxt"
    voc_labelmap.write_text("".join(f'item {{ name: "{n}" label: {i} }}\n' for n, i in VOC_LABELS.items()))
    result = run_cli("make-lmdb", tmp_path / "voc", "-f", "voc", "-s", "trainval", "-o", out, "--check-label",
                     "--labelmap", voc_labelmap)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("caffessd: error:")]
    assert len(errors) == 1 and str(named) in errors[0] and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(out.parent.glob(".*")) and not (out.parent / "labelmap.prototxt").exists()
    result = run_cli("make-lmdb", tmp_path / "voc", "-f", "voc", "-s", "trainval", "-o", out, "--check-label",
                     "--labelmap", voc_labelmap, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 bad images" in result.stdout and str(named) in result.stderr
    keys = [key for key, _ in read_entries(out)]
    assert keys == ["00000000_VOC2007/JPEGImages/000001.jpg", "00000002_VOC2012/JPEGImages/2008_000001.jpg"]  # gap


def test_map_size_grows(tmp_path):
    make_voc(tmp_path / "voc")
    dataset = open_dataset(tmp_path / "voc", "voc", "trainval")
    make_lmdb(dataset, tmp_path / "small", VOC_LABELS, ConvertOptions(encode="none"), progress=False, map_size=32 << 10)
    make_lmdb(dataset, tmp_path / "big", VOC_LABELS, ConvertOptions(encode="none"), progress=False)
    assert read_entries(tmp_path / "small") == read_entries(tmp_path / "big")
    env = lmdb.open(str(tmp_path / "small"), readonly=True, lock=False)
    assert env.info()["map_size"] > 32 << 10  # it had to grow (the size is kept in the file)
    env.close()


def test_killed_run_leaves_nothing_and_rerun_works(tmp_path, run_cli):
    write_image(tmp_path / "img.jpg", 64, 48, seed=1)
    (tmp_path / "img.xml").write_text(voc_xml(64, 48, [("dog", (1, 2, 30, 40), False)]))
    (tmp_path / "labelmap.prototxt").write_text('item { name: "none_of_the_above" label: 0 }\nitem { name: "dog" label: 1 }\n')
    listing = tmp_path / "long.txt"
    listing.write_text("img.jpg img.xml\n" * 100000)
    out = tmp_path / "out_lmdb"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # --no-lint: the annotation check before writing would read all 100,000 lines first
    process = subprocess.Popen([sys.executable, "-m", "caffessd", "make-lmdb", listing, "-f", "list", "-o", out,
                                "--encode", "png", "--no-lint"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(tmp_path.glob(".out_lmdb.partial-*/data.mdb")):
            time.sleep(0.05)
        time.sleep(0.5)  # well into the writing
        assert process.poll() is None, "finished before it could be interrupted"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".out_lmdb.partial-*"))  # what the killed run left, hidden
    listing.write_text("img.jpg img.xml\n" * 3)
    result = run_cli("make-lmdb", listing, "-f", "list", "-o", out)
    assert result.returncode == 0, result.stderr
    assert len(read_entries(out)) == 3 and not list(tmp_path.glob(".out_lmdb.partial-*"))  # stale temp removed
    result = run_cli("make-lmdb", listing, "-f", "list", "-o", out)
    assert result.returncode == 1 and "already exists" in result.stderr
    result = run_cli("make-lmdb", listing, "-f", "list", "-o", out, "--overwrite", "--resize", "8x8")
    assert result.returncode == 0 and read_entries(out)[0][1].datum.width == 8


def test_inspect_lmdb_counts_and_pictures(tmp_path, run_cli):
    make_voc(tmp_path / "voc")
    out = tmp_path / "trainval_lmdb"
    assert run_cli("make-lmdb", tmp_path / "voc", "-f", "voc", "-o", out).returncode == 0
    result = run_cli("inspect-lmdb", out, "--show", "2")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "entries: 3" in text and "boxes: 8 (2 difficult)" in text
    assert "cat                         3 boxes, 0 difficult" in text and "dog                         2 boxes, 1 difficult" in text
    assert "64x48" in text and "stored as: jpg 3ch (3)" in text
    pictures = sorted((tmp_path / "trainval_lmdb_show").glob("*.png"))
    assert [p.name for p in pictures] == ["00000000_VOC2007_JPEGImages_000001.jpg.png",
                                          "00000001_VOC2007_JPEGImages_000002.jpg.png"]
    drawn = cv2.imread(str(pictures[0]))
    assert drawn.shape[0] > 48  # enlarged for readability
    result = run_cli("inspect-lmdb", tmp_path / "voc")
    assert result.returncode == 1 and "not an LMDB folder" in result.stderr


@pytest.mark.parametrize("args, words", [
    (["{tmp}/nowhere", "-f", "voc", "-o", "{tmp}/o"], "nowhere: no such file or folder"),
    (["{tmp}/voc", "-f", "voc", "-s", "train", "-o", "{tmp}/o"], "no VOC year folder has ImageSets/Main/train.txt"),
    (["{tmp}/voc", "-f", "voc", "-o", "{tmp}/o", "--resize", "3xq"], "--resize must be"),
    (["{tmp}/voc", "-f", "voc", "-o", "{tmp}/o", "--resize", "30x20", "--min-dim", "10"], "exclude each other"),
    (["{tmp}/voc", "-f", "voc", "-o", "{tmp}/o", "--labelmap", "{tmp}/bad_labelmap.prototxt"], "bad_labelmap.prototxt"),
    (["{tmp}/voc", "-f", "voc", "-o", "{tmp}/voc/VOC2007/ImageSets/Main/test.txt/o"], "cannot write"),
    (["{tmp}/voc", "-f", "coco", "-o", "{tmp}/o"], "instances_val2017.json: no such file"),
])
def test_bad_options_one_line(tmp_path, capsys, args, words):
    from caffessd.cli import main
    make_voc(tmp_path / "voc")
    (tmp_path / "bad_labelmap.prototxt").write_text("item { name: 'x' label: one }\n")
    with pytest.raises(SystemExit) as info:
        main(["make-lmdb"] + [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.count("\n") == 1 and err.startswith("caffessd: error:") and words in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "labelmap.prototxt").exists()

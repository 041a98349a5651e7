"""Hostile input, round two (issue 22): datasets, LMDBs, caches and outputs.

Each item of the issue is a test here: XML entity expansion, entries that
leave the dataset folder, corrupt LMDBs (SIGBUS before), tampered caches,
outputs that would destroy inputs, a missing image in detect, SIGTERM, deep
JSON, layer rules, one error line, and the small usability faults. Cases
that spend memory, time or a signal run in a child process under an
address-space limit and a timeout (`_run_limited`); the rest run the CLI
in-process (conftest.run_in_process). Seeded mutations of datasets and LMDBs
are in test_fuzz.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caffessd import caffe_pb2, protoio
from caffessd.datasets import open_dataset
from caffessd.datasets.lmdb_writer import ConvertOptions, make_lmdb
from conftest import FACE_CAFFEMODEL as CAFFEMODEL, FACE_DIR as FACE, FACE_PHOTOS, ROOT, run_in_process
from conftest import FACE_PROTOTXT as PROTOTXT
from dataset_builders import make_coco, make_voc, voc_xml, write_image

resource = pytest.importorskip("resource")

PHOTO, PHOTO2 = FACE_PHOTOS
MEMORY = 2 * 2 ** 30      # address-space limit of the child processes
VOC_LABELS = {"none_of_the_above": 0, "dog": 1, "person": 2, "car": 3, "cat": 4}


def _lines(text: str):
    return [line for line in text.splitlines() if line.strip()]


def _one_error(code, err, *words, exit_code=1):
    lines = _lines(err)
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("caffessd: error: "), (code, err[-2000:])
    assert "Traceback" not in err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def _run(argv, capsys):
    return run_in_process(argv, capsys)[:2]


def _run_limited(*args, cwd, timeout=120, memory=MEMORY):
    """`python -m caffessd ARGS` in a child under RLIMIT_AS `memory` and `timeout` seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "caffessd", *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=cwd, preexec_fn=limit, timeout=timeout)
    result.seconds = time.perf_counter() - start
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-2000:]}"
    return result


def _labelmap(path: Path, names=VOC_LABELS) -> Path:
    path.write_text("".join(f'item {{ name: "{n}" label: {i} }}\n' for n, i in names.items()))
    return path


def _small_lmdb(tmp_path) -> Path:
    make_voc(tmp_path / "voc")
    out = tmp_path / "db"
    # Raw pixels: every value is larger than half a page, so LMDB stores it on overflow pages.
    make_lmdb(open_dataset(tmp_path / "voc", "voc", "trainval"), out, VOC_LABELS, ConvertOptions(encode="none"),
              progress=False)
    _labelmap(tmp_path / "labelmap.prototxt")
    return out


# ---------------------------------------------------------------- 1. XML entity expansion

def _laughs(depth: int) -> str:
    """The "billion laughs": entity i expands to ten of entity i-1 (10**depth copies of "lol")."""
    entities = ['<!ENTITY a0 "lol">'] + [f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, depth + 1)]
    return ('<?xml version="1.0"?>\n<!DOCTYPE annotation [\n' + "\n".join(entities) + "\n]>\n"
            f"<annotation><size><width>64</width><height>48</height></size><object><name>&a{depth};</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>\n")


@pytest.mark.parametrize("depth", [5, 9])
def test_entity_expansion_is_refused_at_once(tmp_path, depth):
    """Depth 9 (a billion copies) spun past 60 s; depth 5 (3 MB) was accepted
    silently. Both are one line naming the file and line, in a few seconds."""
    make_voc(tmp_path / "voc")
    bomb = tmp_path / "voc" / "VOC2007" / "Annotations" / "000002.xml"
    bomb.write_text(_laughs(depth))
    result = _run_limited("make-lmdb", tmp_path / "voc", "-f", "voc", "-o", tmp_path / "out" / "db",
                          cwd=tmp_path, timeout=60)
    line = _one_error(result.returncode, result.stderr, f"{bomb}:3", "entity declaration")
    assert "<!ENTITY a0" in line and result.seconds < 30
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    if depth == 9:  # eval reads the same annotations (the class list comes from them)
        result = _run_limited("eval", "--dataset", tmp_path / "voc", "--format", "voc", "--split", "trainval",
                              "--out", tmp_path / "report", cwd=tmp_path, timeout=60)
        _one_error(result.returncode, result.stderr, f"{bomb}:3", "entity declaration")


def test_external_entities_are_never_resolved(tmp_path, capsys):
    """An external entity (file:// or an external DTD) is refused or left
    undefined: the secret's text never reaches an error, a label or the LMDB."""
    make_voc(tmp_path / "voc")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xml = tmp_path / "voc" / "VOC2007" / "Annotations" / "000002.xml"
    body = ("<annotation><size><width>50</width><height>70</height></size><object><name>&x;</name><bndbox>"
            "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>\n")
    xml.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY x SYSTEM "file://{secret}">]>\n{body}')
    code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", tmp_path / "a"], capsys)
    _one_error(code, err, xml, "entity declaration <!ENTITY x")
    dtd = tmp_path / "secret.dtd"
    dtd.write_text(f'<!ENTITY x SYSTEM "file://{secret}">\n')
    xml.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE annotation SYSTEM "file://{dtd}">\n{body}')
    code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", tmp_path / "b"], capsys)
    _one_error(code, err, f"{xml}:3", "undefined entity")  # the DTD was not read, so x stays undefined
    assert "TOPSECRET" not in err and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- 2. entries outside the dataset folder

def _outside_image(tmp_path) -> Path:
    outside = tmp_path / "private" / "photo.jpg"
    write_image(outside, 60, 40, seed=7)
    return outside


def _coco_escape(tmp_path, absolute: bool):
    root = tmp_path / "coco"
    make_coco(root)
    outside = _outside_image(tmp_path)
    annotation = root / "annotations" / "instances_val2017.json"
    data = json.loads(annotation.read_text())
    entry = str(outside) if absolute else "../../private/photo.jpg"
    data["images"][0]["file_name"] = entry
    annotation.write_text(json.dumps(data))
    return ["make-lmdb", root, "-f", "coco"], annotation, entry


def _list_escape(tmp_path, absolute: bool):
    root = tmp_path / "data"
    root.mkdir()
    write_image(root / "a.jpg", 60, 40, seed=1)
    (root / "a.txt").write_text("1 2 3 20 30\n")
    outside = _outside_image(tmp_path)
    entry = str(outside) if absolute else "../private/photo.jpg"
    listing = root / "list.txt"
    listing.write_text(f"a.jpg a.txt\n{entry} a.txt\n")
    _labelmap(root / "labelmap.prototxt", {"bg": 0, "thing": 1})
    return ["make-lmdb", listing, "-f", "list", "--labelmap", root / "labelmap.prototxt"], f"{listing}:2", entry


def _voc_escape(tmp_path, _absolute):
    root = tmp_path / "voc"
    make_voc(root)
    outside = _outside_image(tmp_path)
    (tmp_path / "outside.xml").write_text(voc_xml(60, 40, [("dog", (1, 1, 20, 20), False)]))
    shutil.copyfile(outside, tmp_path / "outside.jpg")
    # A single VOC folder: Annotations/../../outside.xml is beside the dataset, not in it.
    folder = root / "VOC2007"
    split = folder / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("000001\n../../../outside\n")
    return ["make-lmdb", folder, "-f", "voc"], f"{split}:2", "../../../outside"


def _link_escape(tmp_path, _absolute):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("1 2 3 20 30\n")
    (root / "a.jpg").symlink_to(_outside_image(tmp_path))  # what an unpacked archive may hold
    (root / "list.txt").write_text("a.jpg a.txt\n")
    _labelmap(root / "labelmap.prototxt", {"bg": 0, "thing": 1})
    return (["make-lmdb", root / "list.txt", "-f", "list", "--labelmap", root / "labelmap.prototxt"],
            f"{root / 'list.txt'}:1", "leads through a link")


ESCAPES = {"coco-dotdot": (_coco_escape, False), "coco-absolute": (_coco_escape, True),
           "list-dotdot": (_list_escape, False), "list-absolute": (_list_escape, True),
           "voc-split-dotdot": (_voc_escape, False), "symlink": (_link_escape, False)}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_entries_outside_the_dataset_are_refused(case, tmp_path, capsys):
    build, absolute = ESCAPES[case]
    argv, source, entry = build(tmp_path, absolute)
    out = tmp_path / "out" / "db"
    code, err = _run(argv + ["-o", out], capsys)
    line = _one_error(code, err, source, entry, "outside the dataset folder", "--allow-outside-root")
    assert not out.exists() and not list(out.parent.glob(".db*"))
    code, err = _run(argv + ["-o", out, "--allow-outside-root"], capsys)
    assert code == 0, err
    from caffessd.datasets.lmdb_reader import LmdbDataset

    names = [record.name for record in LmdbDataset(out)]
    assert any("photo.jpg" in n or "outside" in n or n == "a.jpg" for n in names), (names, line)


def test_eval_refuses_entries_outside_the_dataset(tmp_path, capsys):
    argv, source, entry = _list_escape(tmp_path, absolute=False)
    _labelmap(tmp_path / "data" / "labelmap.prototxt", {"background": 0, "face": 1})
    code, err = _run(["eval", "--dataset", argv[1], "--format", "list", "--labelmap", argv[5],
                      "--out", tmp_path / "report"], capsys)
    _one_error(code, err, source, entry, "outside the dataset folder")
    assert not (tmp_path / "report").exists()


def test_calibration_refuses_a_link_leading_out(tmp_path):
    from caffessd.inference.calibration import calibration_images
    from caffessd.errors import FormatError

    folder = tmp_path / "calib"
    folder.mkdir()
    shutil.copyfile(PHOTO, folder / "a.jpg")
    (folder / "b.jpg").symlink_to(_outside_image(tmp_path))
    with pytest.raises(FormatError, match=r"calib: image 'b.jpg' leads through a link outside"):
        list(calibration_images(folder, 5))
    assert len(list(calibration_images(folder, 5, allow_outside=True))) == 2


def test_train_source_may_not_climb_out_of_the_data_root(tmp_path):
    from caffessd.errors import FormatError
    from caffessd.train.sources import checked_source

    layer = caffe_pb2.LayerParameter(name="data", type="AnnotatedData")
    root = tmp_path / "data"
    root.mkdir()
    layer.data_param.source = "trainval_lmdb"
    assert checked_source(layer, root, "train.prototxt") == root / "trainval_lmdb"
    layer.data_param.source = "../elsewhere_lmdb"
    with pytest.raises(FormatError, match=r"train.prototxt: layer 'data' data_param.source '../elsewhere_lmdb' "
                                          r"climbs out with '..' outside the dataset folder"):
        checked_source(layer, root, "train.prototxt")
    assert checked_source(layer, root, "train.prototxt", allow_outside=True) == root / "../elsewhere_lmdb"
    layer.data_param.source = str(tmp_path / "abs_lmdb")
    with pytest.raises(FormatError, match="is an absolute path outside"):
        checked_source(layer, root, "train.prototxt")
    assert checked_source(layer, None, "train.prototxt") == tmp_path / "abs_lmdb"  # no data root: as written


# ---------------------------------------------------------------- 3. corrupt LMDBs

def _truncated(db: Path) -> None:
    data = (db / "data.mdb").read_bytes()
    (db / "data.mdb").write_bytes(data[: len(data) // 2])


def _size_flipped(db: Path) -> None:
    """Flipped bytes in a leaf node: its value claims 50 MB, so reading it would
    run past the end of the mapped file (SIGBUS or SIGSEGV without the check)."""
    from caffessd.util.lmdb_check import NODE, PAGE, PAGE_HEADER, P_LEAF

    raw = bytearray((db / "data.mdb").read_bytes())
    for start in range(2 * 4096, len(raw), 4096):
        if PAGE.unpack_from(raw, start)[2] & P_LEAF:
            offset = start + int.from_bytes(raw[start + PAGE_HEADER:start + PAGE_HEADER + 2], "little")
            _, _, flags, key_size = NODE.unpack_from(raw, offset)
            if flags & 1:  # F_BIGDATA: the value's first overflow page follows the key
                raw[offset:offset + 4] = (50 * 2 ** 20).to_bytes(4, "little")  # mn_lo, mn_hi: the data size
                break
    else:
        raise AssertionError("no overflow value in the test LMDB")
    (db / "data.mdb").write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_lmdb_is_one_line_not_sigbus(damage, tmp_path):
    """inspect-lmdb, eval and quantize's calibration on a truncated or
    corrupted data.mdb died of SIGBUS (exit 135, silent): now one line naming
    the database (and the entry), in a child process that must not die of a signal."""
    db = _small_lmdb(tmp_path)
    (_truncated if damage == "truncated" else _size_flipped)(db)
    words = (["truncated"] if damage == "truncated"
             else ["entry '0000000", "52428800-byte value", "outside the database's pages"])
    result = _run_limited("inspect-lmdb", db, cwd=tmp_path)
    _one_error(result.returncode, result.stderr, db, "corrupt LMDB", *words)
    result = _run_limited("eval", "--dataset", db, "--format", "lmdb", "--labelmap", tmp_path / "labelmap.prototxt",
                          "--out", tmp_path / "report", cwd=tmp_path)
    _one_error(result.returncode, result.stderr, db, "corrupt LMDB")
    from caffessd.inference.calibration import calibration_images
    from caffessd.errors import FormatError

    with pytest.raises(FormatError, match="corrupt LMDB"):  # the check runs before any page is mapped
        list(calibration_images(db, 3))


def test_train_on_a_truncated_lmdb_is_one_line(tmp_path, capsys):
    """train reads its LMDB through the same check (in a child: TensorFlow)."""
    pytest.importorskip("tensorflow")
    db = _small_lmdb(tmp_path)
    _truncated(db)
    model = tmp_path / "model"
    code, err = _run(["gen-model", "--input", "64", "--width", "0.25", "--classes", "5", "--batch-size", "2",
                      "--lmdb-train", db, "--lmdb-test", db, "--max-iter", "1", "-o", model], capsys)
    assert code == 0, err
    result = _run_limited("train", model / "solver_train.prototxt", "--no-progress", cwd=tmp_path, timeout=400,
                          memory=16 * 2 ** 30)
    errors = [line for line in _lines(result.stderr) if line.startswith("caffessd:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and str(db) in errors[0] and "truncated" in errors[0], errors


# ---------------------------------------------------------------- 4. the caches are verified

def _detect_faces(cache: Path, capsys):
    code, err, out = run_in_process(["detect", PHOTO, "--cache-dir", cache, "--out", cache.parent / "det",
                                     "--json", cache.parent / "det.json"], capsys)
    found = json.loads((cache.parent / "det.json").read_text())[0]["detections"] if code == 0 else None
    return code, [line for line in _lines(err) if "converted the Caffe model" not in line], found


def _foreign_onnx() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 240, 320])
    y = helper.make_tensor_value_info("detection_out", TensorProto.FLOAT, [1, 1, 1, 7])
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1, 1, 1, 7], [0.0] * 7)
    graph = helper.make_graph([helper.make_node("ReduceMean", ["data"], ["m"], keepdims=1),
                               helper.make_node("Mul", ["m", "zeros"], ["detection_out"])],
                              "foreign", [x], [y], initializer=[zeros])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_tampered_caches_are_rebuilt_not_trusted(tmp_path, capsys):
    """The optimised graph (cache/optimized/*.ort.onnx) was loaded unchecked: a
    tampered file gave wrong boxes with exit 0. A main entry whose .sha256 was
    rewritten to match foreign bytes was used silently (0 detections). Each is
    now rebuilt with one warning line, and the faces come back."""
    from caffessd.inference import model_cache as modelcache
    from caffessd.inference.session import read_optimized

    cache = tmp_path / "cache"
    code, err, reference = _detect_faces(cache, capsys)
    assert code == 0 and len(reference) == 1, err
    optimized = next((cache / "optimized").glob("*.ort.onnx"))
    sidecar = optimized.with_name(optimized.name + ".sha256")
    good = optimized.read_bytes()
    source = sidecar.read_text().split()[1]
    # (a) flipped bytes in the optimised graph; (b) a foreign graph with its checksum rewritten to match.
    for damaged, checksum, why in [
            (good[:1000] + bytes(b ^ 0xFF for b in good[1000:1064]) + good[1064:], None, "checksum mismatch"),
            (_foreign_onnx(), modelcache.digest(_foreign_onnx()) + " " + "0" * 64, "optimised from another model")]:
        optimized.write_bytes(damaged)
        if checksum:
            sidecar.write_text(checksum + "\n")
        code, err, found = _detect_faces(cache, capsys)
        assert code == 0 and found == reference, (err, found)
        assert len(err) == 2 and err[0].startswith(f"caffessd: warning: {optimized}: broken optimised-graph cache "
                                                   f"entry ({why}") and err[0].endswith("; optimising again"), err
        # Rebuilt and recorded again (onnxruntime's output is not byte-identical from run to run).
        assert read_optimized(optimized, source)[0] is not None and sidecar.read_text().split()[1] == source
    # (c) the main entry replaced by a foreign model whose .sha256 matches it.
    entry = next(cache.glob("*.onnx"))
    entry.write_bytes(_foreign_onnx())
    entry.with_name(entry.name + ".sha256").write_text(modelcache.digest(_foreign_onnx()) + "\n")
    code, err, found = _detect_faces(cache, capsys)
    assert code == 0 and found == reference, (err, found)
    assert err[0] == f"caffessd: warning: {entry}: broken cache entry (made from other files than this model's); " \
                     f"converting again", err


# ---------------------------------------------------------------- 5. outputs that destroy inputs

@pytest.fixture
def model_copy(tmp_path):
    """The face detector copied (a test must never risk the bundled files)."""
    prototxt, caffemodel = tmp_path / "face.prototxt", tmp_path / "face.caffemodel"
    shutil.copyfile(PROTOTXT, prototxt)
    shutil.copyfile(CAFFEMODEL, caffemodel)
    return prototxt, caffemodel


def test_detect_json_naming_the_weights_is_refused(model_copy, tmp_path, capsys):
    prototxt, caffemodel = model_copy
    before = caffemodel.read_bytes()
    code, err = _run(["detect", PHOTO, "--model", prototxt, "--weights", caffemodel, "--json", caffemodel,
                      "--out", tmp_path / "det", "--cache-dir", tmp_path / "cache"], capsys)
    _one_error(code, err, caffemodel, "--json would overwrite the caffemodel being read")
    assert caffemodel.read_bytes() == before


def test_detect_json_naming_the_embedded_model_is_refused(tmp_path, capsys, monkeypatch):
    """Without --model the embedded detector's files are the inputs (read from models/)."""
    from caffessd.inference import detector as runtime

    spec = runtime.default_model()
    copy = tmp_path / "embedded.caffemodel"
    shutil.copyfile(spec.caffemodel, copy)
    monkeypatch.setattr(runtime, "default_model", lambda: runtime.ModelSpec(spec.prototxt, copy, spec.preprocessing,
                                                                            spec.labels))
    code, err = _run(["detect", PHOTO, "--json", copy, "--out", tmp_path / "det"], capsys)
    _one_error(code, err, copy, "would overwrite the caffemodel")
    assert copy.read_bytes() == spec.caffemodel.read_bytes()


def test_quantize_output_naming_its_model_is_refused(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"an ONNX model, or not: it must survive either way")
    code, err = _run(["quantize", model, "--calibrate", FACE, "-o", model], capsys)
    _one_error(code, err, model, "-o would overwrite the model being read")
    assert model.read_bytes().startswith(b"an ONNX model")


def test_export_through_a_missing_folder_resolves_and_leaves_nothing(model_copy, tmp_path, capsys):
    """`-o dir/missing/../deploy.prototxt` is dir/deploy.prototxt, the input:
    refused, and no `missing` folder made; a new name through `missing/..` is
    written where the path leads, again without making `missing`."""
    prototxt, caffemodel = model_copy
    before = prototxt.read_bytes()
    code, err = _run(["export-onnx", prototxt, caffemodel, "-o", tmp_path / "missing" / ".." / prototxt.name],
                     capsys)
    _one_error(code, err, "would overwrite the prototxt being read")
    assert prototxt.read_bytes() == before and not (tmp_path / "missing").exists()
    code, err = _run(["export-onnx", prototxt, caffemodel, "-o", tmp_path / "missing" / ".." / "m.onnx"], capsys)
    assert code == 0, err
    assert (tmp_path / "m.onnx").stat().st_size > 100_000 and not (tmp_path / "missing").exists()


def test_make_lmdb_never_deletes_a_dataset(tmp_path, capsys):
    make_voc(tmp_path / "voc")
    before = sorted(str(p) for p in (tmp_path / "voc").rglob("*"))
    for out, says in [(tmp_path / "voc", "--output is the dataset being read"),
                      (tmp_path, "--output would replace a folder holding the dataset"),
                      (tmp_path / "voc" / "VOC2007", "--overwrite replaces only an LMDB folder")]:
        code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", out, "--overwrite"], capsys)
        _one_error(code, err, out, says)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", notes, "--overwrite"], capsys)
    _one_error(code, err, notes, "--overwrite replaces only an LMDB folder", "'thesis.tex'")
    assert (notes / "thesis.tex").read_text() == "years of work"
    assert sorted(str(p) for p in (tmp_path / "voc").rglob("*")) == before
    # An LMDB it wrote is replaced as before.
    out = tmp_path / "lmdb" / "db"
    for _ in range(2):
        code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", out, "--overwrite"], capsys)
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["data.mdb", "lock.mdb"]


def test_name_size_naming_an_annotation_is_refused(tmp_path, capsys):
    make_voc(tmp_path / "voc")
    xml = tmp_path / "voc" / "VOC2007" / "Annotations" / "000001.xml"
    before = xml.read_text()
    code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-s", "test", "-o", tmp_path / "db",
                      "--name-size", xml], capsys)
    _one_error(code, err, xml, "--name-size file would overwrite the file of entry 'VOC2007/JPEGImages/000001.jpg'")
    assert xml.read_text() == before and not (tmp_path / "db").exists()


def test_eval_never_replaces_a_folder_that_is_not_its_report(tmp_path, capsys):
    """eval replaces its --out folder as a whole: --out naming the dataset, a
    folder holding it, or any folder without a report.json is refused."""
    db = _small_lmdb(tmp_path)
    labelmap = tmp_path / "labelmap.prototxt"
    base = ["eval", "--dataset", db, "--format", "lmdb", "--labelmap", labelmap]
    for out, says in [(db, "--out is the dataset being read"), (tmp_path, "--out would replace a folder holding"),
                      (db / "report", "--out lies inside the dataset")]:
        code, err = _run(base + ["--out", out], capsys)
        _one_error(code, err, out, says)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    code, err = _run(base + ["--out", mine], capsys)
    _one_error(code, err, mine, "'holiday.jpg'", "no report.json")
    assert (mine / "holiday.jpg").exists() and (db / "data.mdb").exists()


def test_inspect_lmdb_never_writes_inside_the_lmdb(tmp_path, capsys):
    db = _small_lmdb(tmp_path)
    code, err = _run(["inspect-lmdb", db, "--show", "1", "--show-dir", db / "show"], capsys)
    _one_error(code, err, db / "show", "--show-dir lies inside the LMDB")
    assert sorted(p.name for p in db.iterdir()) == ["data.mdb", "lock.mdb"]


def test_gen_model_labelmap_among_its_outputs_is_refused(tmp_path, capsys):
    labelmap = _labelmap(tmp_path / "deploy.prototxt", {"background": 0, "face": 1})
    before = labelmap.read_text()
    code, err = _run(["gen-model", "--labelmap", labelmap, "-o", tmp_path], capsys)
    _one_error(code, err, labelmap, "would overwrite the labelmap")
    assert labelmap.read_text() == before


# ---------------------------------------------------------------- 6. a missing image does not abort detect

def test_detect_goes_on_past_a_missing_image(tmp_path, capsys):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copyfile(PHOTO, a)
    shutil.copyfile(PHOTO2, b)
    out = tmp_path / "det"
    code, err, stdout = run_in_process(["detect", a, tmp_path / "missing.jpg", b, "--out", out,
                                        "--cache-dir", tmp_path / "cache"], capsys)
    errors = [line for line in _lines(err) if line.startswith("caffessd: error:")]
    assert code == 1 and errors == [f"caffessd: error: {tmp_path / 'missing.jpg'}: no such file"], err
    results = json.loads((out / "detections.json").read_text())
    assert [r["file"] for r in results] == [str(a), str(b)]
    assert all(len(r["detections"]) == 1 for r in results) and len(list(out.glob("*.jpg"))) == 2


# ---------------------------------------------------------------- 7. SIGTERM ends as Ctrl-C does

def _start(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "caffessd", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _wait_for(condition, process, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    assert condition(), "the child never got there"


def test_sigterm_in_detect_keeps_finished_json(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(200):
        os.link(PHOTO, images / f"p{i:03d}.jpg") if i else shutil.copyfile(PHOTO, images / "p000.jpg")
    out = tmp_path / "det"
    process = _start(["detect", images, "--out", out, "--cache-dir", tmp_path / "cache"], tmp_path)
    _wait_for(lambda: len(list(out.glob("*.jpg"))) >= 3, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err, err
    done = json.loads((out / "detections.json").read_text())
    assert 3 <= len(done) < 200
    assert _lines(err)[-1] == (f"caffessd: terminated after {len(done)} of 200 image(s); their detections are in "
                               f"{out / 'detections.json'}")


def test_sigterm_in_make_lmdb_removes_its_partial_output(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_image(data / "a.jpg", 320, 240, seed=3)
    (data / "a.txt").write_text("1 10 10 50 50\n")
    (data / "list.txt").write_text("a.jpg a.txt\n" * 5000)
    _labelmap(data / "labelmap.prototxt", {"bg": 0, "thing": 1})
    out = tmp_path / "out"
    process = _start(["make-lmdb", data / "list.txt", "-f", "list", "--labelmap", data / "labelmap.prototxt",
                      "-o", out / "db", "--name-size", out / "sizes.txt", "--encode", "png", "--workers", "1"],
                     tmp_path)
    _wait_for(lambda: out.exists() and list(out.glob(".db.partial-*/data.mdb"))
              and list(out.glob(".db.partial-*.name_size")), process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and _lines(err) == ["caffessd: terminated"], err
    assert list(out.iterdir()) == []  # no .db.partial-PID folder, no name-size file


# ---------------------------------------------------------------- 8. deep JSON

def test_deeply_nested_json_is_one_line(tmp_path):
    root = tmp_path / "coco"
    make_coco(root)
    annotation = root / "annotations" / "instances_val2017.json"
    annotation.write_text('{"images": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = _run_limited("make-lmdb", root, "-f", "coco", "-o", tmp_path / "db", cwd=tmp_path, timeout=60)
    _one_error(result.returncode, result.stderr, annotation, "nested too deeply")
    result = _run_limited("eval", "--dataset", root, "--format", "coco", "--out", tmp_path / "report",
                          cwd=tmp_path, timeout=60)
    _one_error(result.returncode, result.stderr, annotation, "nested too deeply")
    from caffessd.datasets.listfile import parse_caffe_json
    from caffessd.errors import FormatError

    deep = tmp_path / "a.json"
    deep.write_text("{" + '"a": {' * 50_000 + "}" * 50_001)
    with pytest.raises(FormatError, match="nested too deeply"):
        parse_caffe_json(deep)


# ---------------------------------------------------------------- 9. rules still missing

@pytest.mark.parametrize("field,value,says", [
    ("stride", "2147483648", "stride: 2147483648 is beyond Caffe's int range"),
    ("stride", "4294967295", "stride: 4294967295 is beyond Caffe's int range"),
    ("pad", "3000000000", "pad: 3000000000 is beyond Caffe's int range"),
    ("min_size", "inf", "min_size: must be a finite number, got inf"),
    ("min_size", "nan", "min_size: must be a finite number, got nan"),
    ("min_size", "1e39", "min_size: must be a finite number, got inf"),  # beyond float32
])
def test_values_that_overflow_are_refused(field, value, says, tmp_path, capsys):
    text = PROTOTXT.read_text()
    old = {"stride": "stride: 2", "pad": "pad: 1", "min_size": "min_size: 10.0"}[field]
    assert old in text
    path = tmp_path / "net.prototxt"
    path.write_text(text.replace(old, f"{field}: {value}", 1))
    code, err = _run(["inspect", path], capsys)
    _one_error(code, err, path, says)
    assert "RuntimeWarning" not in err


def test_largest_int_stride_is_still_accepted(tmp_path, capsys):
    path = tmp_path / "net.prototxt"
    path.write_text(PROTOTXT.read_text().replace("stride: 2", "stride: 2147483647", 1))
    code, err = _run(["inspect", path], capsys)
    assert code == 0, err


def test_voc_classes_missing_from_the_labelmap_are_counted(tmp_path, capsys):
    make_voc(tmp_path / "voc")
    labelmap = _labelmap(tmp_path / "labelmap.prototxt", {"none_of_the_above": 0, "person": 1, "car": 2})
    code, err, out = run_in_process(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", tmp_path / "db",
                                     "--labelmap", labelmap], capsys)
    assert code == 0, err
    assert "skipped boxes with labels not in the labelmap: cat (3), dog (2)" in out
    assert "wrote 3 images, 3 boxes" in out


# ---------------------------------------------------------------- 10. one line, always

def test_make_lmdb_failure_is_one_line_even_after_progress(tmp_path, capsys):
    """The error of a failing run is not preceded by progress lines."""
    from caffessd.util.progress import Progress

    make_voc(tmp_path / "voc")
    (tmp_path / "voc" / "VOC2012" / "JPEGImages" / "2008_000001.jpg").write_bytes(b"not a jpeg")
    code, err = _run(["make-lmdb", tmp_path / "voc", "-f", "voc", "-o", tmp_path / "db", "--workers", "0"], capsys)
    _one_error(code, err, "2008_000001.jpg", "cannot decode")
    import io

    stream = io.StringIO()
    with pytest.raises(ValueError), Progress(10, "work", stream=stream, interval=0) as bar:
        bar.update()
        raise ValueError("failed")
    assert stream.getvalue().count("\n") == 1  # the line drawn while working, no final count after the failure


def test_unknown_layer_and_missing_labelmap_errors_name_the_file(tmp_path, capsys):
    net = tmp_path / "lrn.prototxt"
    net.write_text(PROTOTXT.read_text() + '\nlayer { name: "norm" type: "LRN" bottom: "conv1_1" top: "norm" }\n')
    code, err = _run(["export-onnx", net, CAFFEMODEL, "-o", tmp_path / "m.onnx"], capsys)
    _one_error(code, err, f"caffessd: error: {net}: layer 'norm' has type 'LRN'")
    weird = tmp_path / "weird.prototxt"
    weird.write_text(PROTOTXT.read_text() + '\nlayer { name: "w" type: "NoSuchLayer" bottom: "conv1_1" top: "w" }\n')
    code, err = _run(["inspect", weird], capsys)
    _one_error(code, err, f"caffessd: error: {weird}: layer 'w' has type 'NoSuchLayer'")
    db = _small_lmdb(tmp_path)
    (tmp_path / "labelmap.prototxt").unlink()
    code, err = _run(["eval", "--dataset", db, "--format", "lmdb", "--model", PROTOTXT, "--weights", CAFFEMODEL,
                      "--out", tmp_path / "report"], capsys)
    _one_error(code, err, f"caffessd: error: {db}: the dataset does not name its classes", "--labelmap")


def test_convert_tf_error_is_one_line(tmp_path):
    """TensorFlow's C++ start-up lines (eight of them) came before the error."""
    pytest.importorskip("tensorflow")
    (tmp_path / "bad.ckpt.index").write_bytes(b"garbage")
    (tmp_path / "bad.ckpt.data-00000-of-00001").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "caffessd", "convert-tf", tmp_path / "bad.ckpt", "-o",
                             tmp_path / "out"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env=dict(env, PYTHONPATH=str(ROOT)))
    _one_error(result.returncode, result.stderr, tmp_path / "bad.ckpt", "cannot read checkpoint")


# ---------------------------------------------------------------- 11. small usability faults

def _face_voc(root: Path) -> None:
    """A VOC folder of faces: 3 trainval images, 2 test images (the photos)."""
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    boxes = {PHOTO: (287, 130, 467, 384), PHOTO2: (207, 100, 316, 299)}
    ids = {"trainval": ["t1", "t2", "t3"], "test": ["s1", "s2"]}
    for split, names in ids.items():
        for index, name in enumerate(names):
            photo = [PHOTO, PHOTO2][index % 2]
            shutil.copyfile(photo, root / "JPEGImages" / f"{name}.jpg")
            from PIL import Image

            with Image.open(photo) as image:
                width, height = image.size
            (root / "Annotations" / f"{name}.xml").write_text(voc_xml(width, height, [("face", boxes[photo], False)]))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def test_eval_voc_evaluates_the_test_split_by_default(tmp_path, capsys):
    _face_voc(tmp_path / "faces")
    code, err, out = run_in_process(["eval", "--dataset", tmp_path / "faces", "--format", "voc",
                                     "--out", tmp_path / "report"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["settings"]["split"] == "test" and report["results"][0]["images"] == 2
    assert report["results"][0]["summary"]["mAP"] > 0.9  # the face detector finds both faces


def test_gen_model_nms_thresholds_per_net(tmp_path, capsys):
    """The published COCO nets use NMS 0.45 in the test net and 0.6 in deploy: one run now."""
    code, err = _run(["gen-model", "--deploy-nms-threshold", "0.6", "-o", tmp_path], capsys)
    assert code == 0, err

    def nms(name):
        net = protoio.read_prototxt(tmp_path / name)
        layer = next(layer for layer in net.layer if layer.type == "DetectionOutput")
        return round(layer.detection_output_param.nms_param.nms_threshold, 6)

    assert (nms("test.prototxt"), nms("deploy.prototxt")) == (0.45, 0.6)
    code, err = _run(["gen-model", "--nms-threshold", "0.5", "--test-nms-threshold", "0.3", "-o", tmp_path], capsys)
    assert code == 0, err
    assert (nms("test.prototxt"), nms("deploy.prototxt")) == (0.3, 0.5)
    code, err = _run(["gen-model", "--deploy-nms-threshold", "1.5", "-o", tmp_path / "x"], capsys)
    _one_error(code, err, "--deploy-nms-threshold must be in (0, 1], got 1.5")

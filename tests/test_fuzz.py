"""Seeded fuzzing (issues 9 and 22): every run ends with exit 0 or exactly
one `caffessd: error:` line, never a traceback or a death by signal, leaves
no file behind when it fails and no temp file ever, touches no file outside
its output, and stays under an address-space limit (RLIMIT_AS).

- nets: inspect, export-onnx and merge-bn on mutations of the bundled face
  detector's prototxt and caffemodel;
- datasets and LMDBs: make-lmdb on mutated VOC, COCO and list-file datasets
  (XML, JSON and text mutations, entities, paths leaving the folder, deep
  nesting), inspect-lmdb and eval on mutated LMDBs (truncated, flipped bytes
  anywhere, in the B-tree's pages or in the meta pages).

The runs of a batch share one child process (tests/fuzz_worker.py), so each
batch stays well under a minute; the seed makes every failure reproducible.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caffessd import caffe_pb2, protoio
from dataset_builders import make_coco, make_voc, write_image

resource = pytest.importorskip("resource")

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "models" / "yufacedetectnet"
PROTOTXT = FACE / "yufacedetectnet-open-v2.prototxt"
CAFFEMODEL = FACE / "yufacedetectnet-open-v2.caffemodel"
SEED = 9
PROTOTXT_RUNS = 36
CAFFEMODEL_RUNS = 18
LIMIT = 3 * 2 ** 30
NUMBERS = ["0", "-1", "1", "2", "3", "7", "1000000", "2000000000", "0.5", "-0.5", "1e30", "nan"]


def mutate_prototxt(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    how = rng.choice(["number", "number", "number", "delete", "duplicate", "swap", "word", "truncate"])
    if how == "number":
        spots = [m for m in re.finditer(r"(?<=: )-?\d+(\.\d+)?", text)]
        spot = rng.choice(spots)
        return text[:spot.start()] + rng.choice(NUMBERS) + text[spot.end():]
    index = rng.randrange(len(lines))
    if how == "delete":
        del lines[index]
    elif how == "duplicate":
        lines.insert(index, lines[index])
    elif how == "swap":
        other = rng.randrange(len(lines))
        lines[index], lines[other] = lines[other], lines[index]
    elif how == "word":
        words = re.findall(r'"([A-Za-z0-9_]+)"', text)
        if '"' in lines[index]:
            lines[index] = re.sub(r'"[A-Za-z0-9_]+"', f'"{rng.choice(words)}"', lines[index], count=1)
    else:
        return text[: rng.randrange(len(text))]
    return "\n".join(lines) + "\n"


def mutate_caffemodel(data: bytes, rng: random.Random) -> bytes:
    how = rng.choice(["flip", "truncate", "shape", "data", "drop", "rename"])
    if how == "flip":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if how == "truncate":
        return data[: rng.randrange(len(data))]
    model = caffe_pb2.NetParameter.FromString(data)
    layer = rng.choice([layer for layer in model.layer if layer.blobs])
    blob = layer.blobs[0]
    if how == "shape":
        dims = blob.shape.dim
        dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2, 3, 1000000, -1])
    elif how == "data":
        del blob.data[rng.randrange(len(blob.data)):]
    elif how == "drop":
        del layer.blobs[:]
    else:
        layer.name = layer.name + "_renamed"
    return protoio.serialize(model)


def _runs(tmp_path: Path) -> list:
    rng = random.Random(SEED)
    text, weights = PROTOTXT.read_text(), CAFFEMODEL.read_bytes()
    runs = []
    for i in range(PROTOTXT_RUNS):
        path = tmp_path / f"p{i:02d}.prototxt"
        path.write_text(mutate_prototxt(text, rng))
        out = tmp_path / f"out_p{i:02d}"
        runs.append({"argv": ["inspect", str(path)], "out": str(out)})
        command = (["export-onnx", str(path), str(CAFFEMODEL), "-o", str(out / "m.onnx")] if i % 3 else
                   ["merge-bn", "--no-verify", "-m", str(path), "-w", str(CAFFEMODEL), "-o", str(out / "m")])
        runs.append({"argv": command, "out": str(out)})
    for i in range(CAFFEMODEL_RUNS):
        path = tmp_path / f"w{i:02d}.caffemodel"
        path.write_bytes(mutate_caffemodel(weights, rng))
        out = tmp_path / f"out_w{i:02d}"
        runs.append({"argv": ["export-onnx", str(PROTOTXT), str(path), "-o", str(out / "m.onnx")],
                     "out": str(out)})
    return runs


def _run_batch(runs: list, tmp_path: Path, extra_env=None, chatty: bool = False) -> dict:
    """Run `runs` in one worker process under the address-space limit; check every
    result; return how many ended in success and in an error. `chatty`: a
    success may print progress and summary lines on stderr (not errors)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(extra_env or {}))
    env.pop("CAFFESSD_MAX_MEMORY", None)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    child = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_worker.py")], input=json.dumps(runs),
                           capture_output=True, text=True, env=env, cwd=tmp_path, preexec_fn=limit, timeout=300)
    results = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or len(results) != len(runs):  # a signal (SIGBUS...) or a crash of the worker
        culprit = runs[len(results)]["argv"] if len(results) < len(runs) else None
        pytest.fail(f"worker ended with {child.returncode} after {len(results)} of {len(runs)} runs; "
                    f"next run: {culprit}; stderr: {child.stderr[-3000:]}")
    problems, outcomes = [], {"ok": 0, "error": 0}
    for result in results:
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        if result["code"] == 0:
            outcomes["ok"] += 1
            fine = all(line.startswith("caffessd: warning:") or (chatty and not line.startswith("caffessd:"))
                       for line in lines)
        else:
            outcomes["error"] += 1
            fine = (result["code"] == 1 and len(lines) == 1 and lines[0].startswith("caffessd: error: ")
                    and not result["left"])
        hidden = [name for name in result["left"] if name.endswith(".tmp") or ".partial-" in name]
        if not fine or "Traceback" in result["stderr"] or hidden or result.get("changed"):
            problems.append(f"{' '.join(result['argv'])}: exit {result['code']}, left {result['left']}, "
                            f"changed outside the output {result.get('changed')}, stderr {result['stderr'][-800:]!r}")
    assert not problems, "\n".join(problems)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.partial-*"))
    return outcomes


def test_fuzzed_files_give_one_line_or_success(tmp_path):
    outcomes = _run_batch(_runs(tmp_path), tmp_path)
    # The mutations must reach both outcomes, or the fuzzing proves little.
    assert outcomes["ok"] >= 10 and outcomes["error"] >= 20, outcomes


# ---------------------------------------------------------------- datasets and LMDBs (issue 22)

DATASET_SEED = 22
DATASET_RUNS = 60
LMDB_RUNS = 36
JSON_VALUES = [None, True, -1, 0, 7, 1.5, 1e308, 10 ** 30, -1e-300, "", "x", "../../../escape.jpg",
               "/etc/hostname", "a/../../b.jpg", [], {}, [1, 2, 3, 4], {"id": 1}, "\u00e9\u0000", "NaN"]
XML_NUMBERS = ["0", "-5", "1e9", "nan", "inf", "3.5", "99999999999999999999", "", "x"]


def mutate_json(data, rng: random.Random):
    """One structural change somewhere in a JSON tree, or nesting far too deep."""
    if rng.random() < 0.06:
        return "[" * 50000 + "]" * 50000
    spots = []

    def walk(node):
        for key in (range(len(node)) if isinstance(node, list) else list(node)):
            spots.append((node, key))
            if isinstance(node[key], (dict, list)):
                walk(node[key])
    walk(data)
    node, key = rng.choice(spots)
    how = rng.choice(["value", "value", "value", "delete", "copy"])
    if how == "delete":
        del node[key]
    elif how == "copy" and isinstance(node, list):
        node.append(json.loads(json.dumps(node[key])))
    else:
        node[key] = json.loads(json.dumps(rng.choice(JSON_VALUES)))
    text = json.dumps(data)
    return text[: rng.randrange(len(text))] if rng.random() < 0.1 else text


def mutate_xml(text: str, rng: random.Random) -> bytes:
    how = rng.choice(["number", "number", "name", "delete", "duplicate", "truncate", "entity", "tag", "bytes"])
    lines = text.splitlines()
    index = rng.randrange(len(lines))
    if how == "number":
        spots = list(re.finditer(r">(-?\d+(\.\d+)?)<", text))
        spot = rng.choice(spots)
        return (text[:spot.start(1)] + rng.choice(XML_NUMBERS) + text[spot.end(1):]).encode()
    if how == "name":
        return re.sub(r"<name>[^<]*</name>", f"<name>{rng.choice(['zebra', '', '&amp;', 'dog dog'])}</name>",
                      text, count=1).encode()
    if how == "delete":
        del lines[index]
    elif how == "duplicate":
        lines.insert(index, lines[index])
    elif how == "truncate":
        return text[: rng.randrange(len(text))].encode()
    elif how == "entity":
        depth = rng.choice([1, 3, 8])
        entities = ['<!ENTITY e0 "lol">'] + [f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, depth + 1)]
        lines.insert(0, "<!DOCTYPE annotation [" + "".join(entities) + "]>")
        return "\n".join(lines).replace("<folder>VOC</folder>", f"<folder>&e{depth};</folder>").encode()
    elif how == "tag":
        lines[index] = re.sub(r"</?([a-z]+)>", lambda m: m.group(0).replace(m.group(1), "bogus"), lines[index], 1)
    else:
        return text.encode()[: rng.randrange(1, 200)] + bytes(rng.randrange(256) for _ in range(40))
    return ("\n".join(lines) + "\n").encode()


def mutate_lines(text: str, rng: random.Random) -> str:
    """A list or split file: a line climbing out, absolute, doubled, missing, garbled."""
    lines = text.splitlines()
    index = rng.randrange(len(lines))
    how = rng.choice(["dotdot", "absolute", "fields", "missing", "delete", "bytes"])
    first = lines[index].split()
    if how == "dotdot":
        lines[index] = " ".join(["../" * rng.randint(1, 4) + first[0]] + first[1:])
    elif how == "absolute":
        lines[index] = " ".join(["/etc/hostname"] + first[1:])
    elif how == "fields":
        lines[index] = lines[index] + " extra"
    elif how == "missing":
        lines[index] = " ".join(["nope"] + first[1:])
    elif how == "delete":
        del lines[index]
    else:
        lines[index] = "\udcff".join(first)
    return "\n".join(lines) + "\n"


def mutate_lmdb(folder: Path, rng: random.Random) -> None:
    """Damage data.mdb: truncate it, flip bytes anywhere, in B-tree pages or in the meta pages."""
    target = folder / "data.mdb"
    raw = bytearray(target.read_bytes())
    how = rng.choice(["truncate", "flip", "tree", "tree", "meta"])
    if how == "truncate":
        raw = raw[: rng.randrange(len(raw))]
    elif how == "meta":
        for _ in range(rng.randint(1, 4)):
            raw[rng.choice([rng.randrange(136), 4096 + rng.randrange(136)])] = rng.randrange(256)
    else:
        pages = [p for p in range(2, len(raw) // 4096) if raw[p * 4096 + 10] in (1, 2)] if how == "tree" else []
        for _ in range(rng.randint(1, 8)):
            if pages:
                page = rng.choice(pages) * 4096
                raw[page + rng.choice([rng.randrange(64), rng.randrange(4096)])] = rng.randrange(256)
            else:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
    target.write_bytes(bytes(raw))


def _base_datasets(base: Path) -> dict:
    """The unmutated material: a VOC devkit, a COCO folder, a list-file dataset
    of faces (txt, json and xml annotations) and an LMDB of it."""
    make_voc(base / "voc")
    make_coco(base / "coco")
    faces = base / "faces"
    faces.mkdir()
    lines = []
    for index, kind in enumerate(["txt", "json", "xml", "txt"]):
        write_image(faces / f"f{index}.jpg", 80, 60, seed=index)
        annotation = faces / f"f{index}.{kind}"
        if kind == "txt":
            annotation.write_text(f"1 {5 + index} 6 40 50\n")
        elif kind == "json":
            annotation.write_text(json.dumps({"image": {"width": 80, "height": 60},
                                              "annotation": [{"category_id": "face", "bbox": [3, 4, 30, 30]}]}))
        else:
            from dataset_builders import voc_xml
            annotation.write_text(voc_xml(80, 60, [("face", (2, 3, 50, 40), False)]))
        lines.append(f"f{index}.jpg f{index}.{kind}")
    (faces / "list.txt").write_text("\n".join(lines) + "\n")
    (faces / "labelmap.prototxt").write_text('item { name: "background" label: 0 }\nitem { name: "face" label: 1 }\n')
    from caffessd.cli import main

    for encode in ("keep", "none"):  # JPEG values inline in the leaves; raw pixels on overflow pages
        try:
            main([str(a) for a in ["make-lmdb", faces / "list.txt", "-f", "list", "--labelmap",
                                   faces / "labelmap.prototxt", "-o", base / f"lmdb_{encode}" / "db",
                                   "--encode", encode]])
        except SystemExit as exc:
            assert exc.code in (0, None)
        shutil.copyfile(faces / "labelmap.prototxt", base / f"lmdb_{encode}" / "labelmap.prototxt")
    return {"voc": base / "voc", "coco": base / "coco", "faces": faces,
            "lmdb": [base / "lmdb_keep", base / "lmdb_none"]}


def _dataset_run(base: dict, work: Path, index: int, rng: random.Random) -> dict:
    """Copy one dataset into work/, mutate one of its files, and the make-lmdb run on it."""
    kind = rng.choice(["voc", "voc", "coco", "coco", "list", "list"])
    folder = work / "in"
    out = work / "out"
    if kind == "voc":
        shutil.copytree(base["voc"], folder)
        if rng.random() < 0.25:
            split = folder / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
            split.write_text(mutate_lines(split.read_text(), rng))
        else:
            xml = rng.choice(sorted(folder.rglob("*.xml")))
            xml.write_bytes(mutate_xml(xml.read_text(), rng))
        argv = ["make-lmdb", folder, "-f", "voc", "-s", rng.choice(["trainval", "test"])]
    elif kind == "coco":
        shutil.copytree(base["coco"], folder)
        annotation = folder / "annotations" / "instances_val2017.json"
        annotation.write_text(mutate_json(json.loads(annotation.read_text()), rng))
        argv = ["make-lmdb", folder, "-f", "coco"]
    else:
        shutil.copytree(base["faces"], folder)
        target = rng.choice([folder / "list.txt", folder / "f0.txt", folder / "f1.json", folder / "f2.xml"])
        if target.suffix == ".json":
            target.write_text(mutate_json(json.loads(target.read_text()), rng))
        elif target.suffix == ".xml":
            target.write_bytes(mutate_xml(target.read_text(), rng))
        else:
            target.write_text(mutate_lines(target.read_text(), rng), errors="surrogateescape")
        argv = ["make-lmdb", folder / "list.txt", "-f", "list", "--labelmap", folder / "labelmap.prototxt"]
    argv += ["-o", out / "db", "--workers", str(rng.choice([0, 2]))]
    argv += rng.choice([[], [], ["--skip-bad"], ["--check-label"], ["--resize", "32x24"]])
    return {"argv": [str(a) for a in argv], "out": str(out), "watch": _watched(work)}


def _watched(work: Path) -> list:
    """Everything of the test but eval's model cache: the base material and every run's folder."""
    top = work.parent.parent
    return [str(top / "base"), str(top / "runs")]


def _lmdb_run(base: dict, work: Path, index: int, rng: random.Random) -> dict:
    source = rng.choice(base["lmdb"])
    shutil.copytree(source, work / "in")
    mutate_lmdb(work / "in" / "db", rng)
    out = work / "out"
    if index % 3 == 2:  # eval reads every entry through the embedded face detector
        argv = ["eval", "--dataset", work / "in" / "db", "--format", "lmdb", "--labelmap",
                work / "in" / "labelmap.prototxt", "--out", out / "report", "--threads", "1"]
    else:
        argv = ["inspect-lmdb", work / "in" / "db", "--show", "2", "--show-dir", out / "show"]
    return {"argv": [str(a) for a in argv], "out": str(out), "watch": _watched(work)}


def test_fuzzed_datasets_and_lmdbs_give_one_line_or_success(tmp_path):
    rng = random.Random(DATASET_SEED)
    base = _base_datasets(tmp_path / "base")
    runs = []
    for index in range(DATASET_RUNS + LMDB_RUNS):
        work = tmp_path / "runs" / f"r{index:03d}"
        make = _dataset_run if index < DATASET_RUNS else _lmdb_run
        runs.append(make(base, work, index, rng))
    cache = tmp_path / "cache"  # eval's converted face detector: the one place written besides the outputs
    outcomes = _run_batch(runs, tmp_path, {"CAFFESSD_CACHE": str(cache)}, chatty=True)
    assert outcomes["ok"] >= 15 and outcomes["error"] >= 30, outcomes

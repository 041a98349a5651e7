"""The package's layers and the family map its layer registries share
(docs/architecture.md).

A module may import only from its own layer or a lower one; the core never
imports onnxruntime, TensorFlow or OpenCV; light project modules are imported
at module level (only heavy optional libraries stay inside functions); and a
Caffe layer type lives in the same family module in every registry.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "caffessd"

# Low to high. A module's layer is that of its longest matching prefix.
LAYERS = [
    ("util", ["caffessd.errors", "caffessd.util"]),
    ("core", ["caffessd", "caffessd.caffe_pb2", "caffessd.protoio", "caffessd.net", "caffessd.layers",
              "caffessd.netnotes", "caffessd.netprep", "caffessd.summary", "caffessd.validate",
              "caffessd.priorbox", "caffessd.boxmatch", "caffessd.resources"]),
    ("image", ["caffessd.image"]),
    ("data", ["caffessd.datasets", "caffessd.generators"]),
    ("conversion", ["caffessd.onnxconv"]),
    ("inference", ["caffessd.inference"]),
    ("features", ["caffessd.eval", "caffessd.merge_bn", "caffessd.tfconvert", "caffessd.video",
                  "caffessd.analysis", "caffessd.export"]),
    # The TFLite exporter builds the net with the trainer's TensorFlow executor.
    ("train", ["caffessd.train", "caffessd.export.tflite"]),
    ("commands", ["caffessd.commands", "caffessd.cli", "caffessd.__main__"]),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}
CORE_FORBIDDEN = {"onnxruntime", "tensorflow", "cv2"}
# Imported inside functions on purpose: heavy, optional, or slow to start.
HEAVY = {"onnx", "onnxruntime", "tensorflow", "cv2", "matplotlib", "scipy", "pycocotools", "tf_keras", "keras",
         "av", "openvino", "nncf", "ncnn", "torch", "torchvision", "ai_edge_litert", "tensorboard"}

# The one family map (docs/architecture.md): the module each Caffe layer type
# lives in, in onnxconv (emitters), train/executor (builders) and validate (checkers).
FAMILIES = {
    "conv": {"Convolution", "Deconvolution", "InnerProduct"},
    "pooling": {"Pooling"},
    "activations": {"ReLU", "ReLU6", "PReLU", "Sigmoid", "TanH", "Power", "Softmax", "ELU", "AbsVal", "BNLL",
                    "Exp", "Log", "Threshold"},
    "normalization": {"BatchNorm", "Scale", "Bias", "Normalize", "LRN", "MVN"},
    "tensor_ops": {"Eltwise", "Concat", "Slice", "Split", "Flatten", "Reshape", "Permute", "Crop", "Silence",
                   "Dropout", "ArgMax", "Tile", "Reduction", "Input"},
    "ssd": {"PriorBox", "DetectionOutput", "MultiBoxLoss"},
}
FAMILY_OF = {layer_type: family for family, types in FAMILIES.items() for layer_type in types}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank_of(module: str) -> int:
    best = max((prefix for prefix in RANK if module == prefix or module.startswith(prefix + ".")), key=len)
    return RANK[best]


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def imports(tree):
    """(imported module, at module level?) for every absolute import in `tree`."""
    top = set()
    for node in tree.body:
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            top.add(id(inner))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "caffessd":
                for alias in node.names:
                    yield (f"caffessd.{alias.name}" if alias.name != "__version__" else "caffessd"), id(node) in top
            else:
                yield node.module, id(node) in top


def test_every_module_has_a_layer():
    for path in modules():
        rank_of(module_name(path))  # raises ValueError (max of nothing) when no layer claims it


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in modules():
        me = module_name(path)
        for target, _ in imports(ast.parse(path.read_text())):
            if target.split(".")[0] == "caffessd" and rank_of(target) > rank_of(me):
                upward.append(f"{me} -> {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_core_imports_no_engine():
    core = {prefix for prefix, rank in RANK.items() if rank <= RANK["caffessd.protoio"]}
    found = []
    for path in modules():
        me = module_name(path)
        if rank_of(me) > RANK["caffessd.protoio"] and me not in core:
            continue
        for target, _ in imports(ast.parse(path.read_text())):
            if target.split(".")[0] in CORE_FORBIDDEN:
                found.append(f"{me} imports {target}")
    assert not found, "\n".join(found)


def _heavy_modules():
    """caffessd modules whose import pulls in a heavy library (transitively, at module level)."""
    tops = {}
    for path in modules():
        tree = ast.parse(path.read_text())
        tops[module_name(path)] = {target for target, at_top in imports(tree) if at_top}
    heavy = set()
    changed = True
    while changed:
        changed = False
        for module, targets in tops.items():
            parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
            if module not in heavy and any(t.split(".")[0] in HEAVY or t in heavy for t in targets | parents):
                heavy.add(module)
                changed = True
    return heavy, set(tops)


def test_light_project_modules_are_imported_at_module_level():
    heavy, known = _heavy_modules()
    lazy = []
    for path in modules():
        me = module_name(path)
        for target, at_top in imports(ast.parse(path.read_text())):
            if at_top or target.split(".")[0] != "caffessd" or target not in known or target in heavy:
                continue
            if target == me or target.startswith(me + "."):  # a package importing its own parts
                continue
            lazy.append(f"{me}: {target}")
    assert not lazy, "light modules imported inside functions (move them to the top):\n" + "\n".join(lazy)


def _registry_families(registry, package):
    wrong = []
    for layer_type, fn in sorted(registry.items()):
        family = fn.__module__.rsplit(".", 1)[-1]
        expected = FAMILY_OF.get(layer_type)
        if expected is None:
            wrong.append(f"{package}: {layer_type} has no family in the map (add it to FAMILIES and docs)")
        elif family != expected or not fn.__module__.startswith(package):
            wrong.append(f"{package}: {layer_type} is in {fn.__module__}, its family is {expected}")
    return wrong


def test_onnxconv_and_validate_follow_the_family_map():
    from caffessd.onnxconv import EMITTERS
    from caffessd.validate import CHECKERS

    wrong = _registry_families(EMITTERS, "caffessd.onnxconv") + _registry_families(CHECKERS, "caffessd.validate")
    assert not wrong, "\n".join(wrong)


def test_train_executor_follows_the_family_map():
    pytest.importorskip("tensorflow")
    from caffessd.train.executor import BUILDERS
    from caffessd.train.executor.registry import STORAGE

    wrong = _registry_families(BUILDERS, "caffessd.train.executor") + _registry_families(STORAGE, "caffessd.train.executor")
    assert not wrong, "\n".join(wrong)
    assert set(STORAGE) <= set(BUILDERS)  # a blob layout is read by its layer's builder
    assert "MultiBoxLoss" in BUILDERS  # registered by the executor package itself


def test_ncnn_exporter_follows_the_family_map():
    from caffessd.export.ncnn import WRITERS

    wrong = _registry_families(WRITERS, "caffessd.export.ncnn")
    assert not wrong, "\n".join(wrong)


def test_family_modules_have_the_same_names_in_every_registry():
    for package in ("onnxconv", "validate", "train/executor", "export/ncnn"):
        present = {p.stem for p in (PACKAGE / package).glob("*.py")}
        assert set(FAMILIES) <= present, f"{package} lacks family modules {sorted(set(FAMILIES) - present)}"


def test_every_package_says_what_it_holds_and_may_import():
    missing = []
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "May import" not in doc:
            missing.append(module_name(init))
    assert not missing, "packages whose opening docstring does not say what they may import: " + ", ".join(missing)

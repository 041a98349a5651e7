"""The engine registry: which runtime runs an artifact.

Each engine is a module caffessd/inference/engines/<name>_engine.py whose
`ENGINE` is a caffessd.inference.engines.base.Engine subclass. The table
below names every engine caffessd knows; a module that is not there (yet)
is simply not available, so adding an engine is adding its module.

    from caffessd.inference.engines import open_engine
    engine = open_engine("ssd.xml")                       # chosen by file type
    engine = open_engine("ssd.onnx", engine="openvino")   # or by name
    rows = engine.run(blob)

An engine's runtime is an optional extra (caffessd[openvino], [ncnn],
[tflite]); asking for one that is not installed is one line naming it
(caffessd.inference.engines.base.MissingRuntime).

May import: util, the core, image/ and onnxconv/ (an engine reads caffessd's
ONNX metadata); each runtime only inside functions. Never exporters
(caffessd.export) or anything above inference/.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, List, Optional, Type

from caffessd.errors import CaffessdError, FormatError
from caffessd.inference.engines.base import BLOB, IMAGE, Engine, MissingRuntime, require_runtime, rows_from

# --engine name -> module defining ENGINE. Order matters where two engines
# claim a suffix: the first one is the default for that file type.
ENGINE_MODULES: Dict[str, str] = {
    "onnxruntime": "caffessd.inference.engines.onnxruntime_engine",
    "openvino": "caffessd.inference.engines.openvino_engine",
    "ncnn": "caffessd.inference.engines.ncnn_engine",
    "tflite": "caffessd.inference.engines.tflite_engine",
}
ENGINE_NAMES = tuple(ENGINE_MODULES)

__all__ = ["BLOB", "ENGINE_NAMES", "IMAGE", "Engine", "MissingRuntime", "engine_class", "engine_for_path",
           "known_engines", "open_engine", "require_runtime", "rows_from"]


def engine_class(name: str) -> Type[Engine]:
    """The Engine subclass registered as `name`; CaffessdError when caffessd
    has no such engine (a typo, or a module not in this version)."""
    module_name = ENGINE_MODULES.get(str(name).lower())
    if module_name is None:
        raise CaffessdError(f"unknown engine '{name}' (caffessd has: {', '.join(ENGINE_NAMES)})")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise CaffessdError(f"this caffessd has no {name} engine yet") from None
    return module.ENGINE


def known_engines() -> List[Type[Engine]]:
    """The engines this caffessd has (installed runtime or not), in table order."""
    found = []
    for name in ENGINE_NAMES:
        try:
            found.append(engine_class(name))
        except CaffessdError:
            continue
    return found


def engine_for_path(path) -> Type[Engine]:
    """The engine that opens `path` by its file type (suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".prototxt", ".caffemodel"):
        raise FormatError(path, "is part of a Caffe model, not an exported one (.onnx, .xml, ...): give a Caffe "
                                "model as its deploy prototxt and caffemodel (--model/--weights)")
    engines = known_engines()
    for engine in engines:
        if suffix in engine.suffixes:
            return engine
    kinds = ", ".join(f"{s} ({e.name})" for e in engines for s in e.suffixes)
    raise FormatError(path, f"cannot tell which engine runs a '{suffix or 'suffix-less'}' file "
                            f"(known: {kinds}); give --engine")


def open_engine(path, engine: Optional[str] = None, threads: Optional[int] = None, device: Optional[str] = None,
                precision: Optional[str] = None) -> Engine:
    """Open the artifact at `path` with the engine named `engine`, or the one
    its file type says."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such model file")
    cls = engine_class(engine) if engine else engine_for_path(path)
    opens = cls.suffixes + cls.also_opens
    if path.suffix.lower() not in opens:
        raise FormatError(path, f"the {cls.name} engine opens {' and '.join(opens)} files, not "
                                f"'{path.suffix or 'suffix-less'}' ones")
    return cls.open(path, threads=threads, device=device, precision=precision)

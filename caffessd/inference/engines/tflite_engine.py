"""The TFLite engine: models written by `caffessd export-tflite` (NAME.tflite
and the NAME.caffessd.json sidecar) on Google's LiteRT interpreter (pip
package `ai-edge-litert`, extra caffessd[tflite]).

The model takes one NHWC image, so a batch is a loop and the engine
transposes caffessd's NCHW blob. The full model's outputs are those of
TFLite_Detection_PostProcess: boxes (ymin, xmin, ymax, xmax), classes
(0-based, without the background), scores and the count; the engine turns
the first `count` of them into caffessd's rows (image, label = class + 1,
score, xmin, ymin, xmax, ymax). A LiteRT interpreter is not thread-safe, so
each thread gets its own (detect --streams).
"""
from __future__ import annotations

import threading
from typing import Dict, Optional

import numpy as np

from caffessd.errors import FormatError
from caffessd.inference.engines.base import BLOB, Engine, require_runtime
from caffessd.util.quiet import quiet_stderr

DETECTION_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


class TfliteEngine(Engine):
    name = "tflite"
    extra = "tflite"
    suffixes = (".tflite",)
    devices = ("cpu",)
    precisions = ("f32",)

    @classmethod
    def runtime_module(cls) -> str:
        return "ai_edge_litert"

    @classmethod
    def open(cls, path, threads: Optional[int] = None, device: Optional[str] = None,
             precision: Optional[str] = None) -> "TfliteEngine":
        self, facts = cls._with_sidecar(path, threads, device, precision, required=("outputs",))
        self._module = require_runtime("ai_edge_litert.interpreter", engine="tflite", extra="tflite",
                                       package="ai-edge-litert")
        try:
            self._content = self.path.read_bytes()
        except OSError as exc:
            raise FormatError(self.path, f"cannot read it ({exc.strerror or exc})") from None
        self._local = threading.local()
        with quiet_stderr():        # LiteRT prints an INFO line on its first interpreter of a process
            self._interpreter()      # load now: a bad file fails at open, not at the first image
        self.outputs_by_name = list(facts["outputs"])
        self.full = self.outputs_by_name[:4] == list(DETECTION_OUTPUTS)
        self.input_format = BLOB
        self.batch = None
        return self

    def _interpreter(self):
        """This thread's interpreter, its input index and output indices by name."""
        found = getattr(self._local, "state", None)
        if found is None:
            try:
                interpreter = self._module.Interpreter(model_content=self._content, num_threads=self.threads)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
                raise FormatError(self.path, f"LiteRT cannot load it: {text[:300]}") from None
            inputs = interpreter.get_input_details()
            if len(inputs) != 1 or list(inputs[0]["shape"][:1]) != [1] or inputs[0]["shape"][-1] != 3:
                raise FormatError(self.path, "is not a caffessd TFLite detector (one NHWC image input expected)")
            outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
            found = self._local.state = (interpreter, inputs[0]["index"], outputs)
        return found

    def _invoke(self, image: np.ndarray, names) -> Dict[str, np.ndarray]:
        interpreter, input_index, outputs = self._interpreter()
        missing = [n for n in names if n not in outputs]
        if missing:
            raise FormatError(self.path, f"has no output '{missing[0]}' (outputs: {', '.join(outputs)})")
        interpreter.set_tensor(input_index, np.ascontiguousarray(image.transpose(1, 2, 0)[None], np.float32))
        interpreter.invoke()
        return {name: np.array(interpreter.get_tensor(outputs[name])) for name in names}

    def run(self, blob: np.ndarray) -> np.ndarray:
        if not self.full:
            raise FormatError(self.path, "was exported with --raw: it has no detection outputs")
        rows = []
        for index, image in enumerate(np.asarray(blob, np.float32)):
            found = self._invoke(image, DETECTION_OUTPUTS)
            count = int(found["num_detections"].reshape(-1)[0])
            boxes = found["detection_boxes"].reshape(-1, 4)[:count]
            classes = found["detection_classes"].reshape(-1)[:count]
            scores = found["detection_scores"].reshape(-1)[:count]
            rows.append(np.column_stack([np.full(count, index, np.float32), classes + 1, scores,
                                         boxes[:, 1], boxes[:, 0], boxes[:, 3], boxes[:, 2]]).astype(np.float32))
        return np.concatenate(rows) if rows else np.zeros((0, 7), np.float32)

    def outputs(self, blob: np.ndarray) -> Dict[str, np.ndarray]:
        """Every output of the model for the first image, by name (raw
        exports: loc, conf, priors in the ONNX --raw export's shapes)."""
        return self._invoke(np.asarray(blob, np.float32)[0], self.outputs_by_name)


ENGINE = TfliteEngine

"""Exporters to the runtimes caffessd deploys to, one subpackage each
(openvino: `caffessd export-openvino`). The engines that run what they write
live in caffessd.inference.engines.

May import: util, the core, image/, datasets/, onnxconv/ and inference/ (the
engines' metadata conventions, calibration). Each runtime's library only
inside functions.
"""

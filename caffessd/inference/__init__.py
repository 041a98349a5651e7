"""Running detectors: the Detector (caffessd.inference.detector, until the
architecture move: caffessd.runtime) and the engines it delegates to
(caffessd.inference.engines: onnxruntime, OpenVINO, ncnn, TFLite)."""

"""Image I/O: reading files as `cv2.imread` does (read), turning an image into
a net's input blob (preprocess), and drawing detections (draw).

May import: util and the core. Never onnxruntime, TensorFlow or OpenCV.
"""

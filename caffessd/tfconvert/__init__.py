"""Convert TensorFlow Object Detection API SSD checkpoints to Caffe.

TensorFlow is an optional dependency (`pip install 'caffessd[tf]'`); it is
imported lazily, only by the functions that read checkpoints or Keras files.

May import: util, the core, generators/, onnxconv/ and inference/.
"""

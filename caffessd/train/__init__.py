"""Training Caffe SSD nets on TensorFlow (the `tf` extra): `caffessd train`.

    executor/   a train/test net's forward in TensorFlow, one builder per Caffe layer type
    multibox    MultiBoxLoss matching and mining (numpy, as the SSD fork does them)
    loss        MultiBoxLoss's differentiable value (built by executor/ssd.py)
    solver      Caffe's solvers and learning-rate policies on TensorFlow variables
    snapshot    PREFIX_iter_N.caffemodel/.solverstate, initial weights by layer name
    trainer     Solver::Solve: iterations, tests (mAP via caffessd.eval), snapshots, failing loudly
    data        the AnnotatedData layer as a tf.data pipeline (augment/: the fork's augmentation)
    show        PNGs of augmented training samples with their boxes
    inputs      the trainer's one call into the input pipeline
    devices     --gpus

Nothing here is imported by the core commands; importing a submodule that
needs TensorFlow without it installed raises a CaffessdError saying which
extra to install.

May import: every layer below it (util, core, image, datasets, generators,
onnxconv, inference, eval); never commands/.
"""

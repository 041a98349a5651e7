"""Shared pieces of the trainer tests: small generated nets with random weights."""
from __future__ import annotations

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.generators import SSDConfig, build_net


def small_config(backbone="mnv1", head="ssd", size=64, classes=3, batch=2, **kw) -> SSDConfig:
    return SSDConfig(backbone=backbone, head=head, input_width=size, input_height=size, num_classes=classes,
                     width=0.25, batch_size=batch, test_batch_size=batch, **kw)


def random_bn_statistics(weights, seed=0):
    """Plausible BatchNorm running sums with a scale factor of 2 (so stats = sums / 2)."""
    rng = np.random.default_rng(seed)
    out = dict(weights)
    for name, arrays in weights.items():
        if len(arrays) == 3 and arrays[2].size == 1 and arrays[0].ndim == 1:
            c = arrays[0].size
            out[name] = [rng.normal(0, 0.2, c).astype(np.float32), rng.uniform(1.0, 4.0, c).astype(np.float32),
                         np.array([2.0], np.float32)]
    return out


def caffemodel_of(weights, name="net") -> caffe_pb2.NetParameter:
    model = caffe_pb2.NetParameter(name=name)
    for layer_name, arrays in weights.items():
        layer = model.layer.add(name=layer_name)
        for array in arrays:
            protoio.array_to_blob(np.asarray(array, np.float32), layer.blobs.add())
    return model


def nets(config):
    return build_net(config, "train"), build_net(config, "test")


def synthetic_batches(batch, size, classes, count, seed=0, box_scale=(0.25, 0.6)):
    """`count` fixed batches of noisy images, each with 1-2 bright rectangles and their gt rows."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        images = rng.normal(0, 0.3, (batch, 3, size, size)).astype(np.float32)
        rows = []
        for i in range(batch):
            for _ in range(int(rng.integers(1, 3))):
                w, h = rng.uniform(*box_scale, 2)
                x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
                label = int(rng.integers(1, classes))
                x0, y0, x1, y1 = (int(round(v * size)) for v in (x, y, x + w, y + h))
                images[i, label % 3, y0:y1, x0:x1] += 1.5
                rows.append([i, label, 0, x, y, x + w, y + h, 0])
        batches.append((images, np.asarray(rows, np.float32)))
    return batches


def synthetic_input(batches_by_phase):
    """An input function with build_input's signature over fixed batches (in order, repeating)."""
    import tensorflow as tf

    def build_input(layer, phase="TRAIN", *, seed=0, shard=(0, 1), root=None):
        batches = batches_by_phase[phase]

        def generate():
            for images, gt in batches:
                yield images, gt
        sample = batches[0][0]
        return tf.data.Dataset.from_generator(generate, output_signature=(
            tf.TensorSpec(sample.shape, tf.as_dtype(sample.dtype)), tf.TensorSpec([None, 8], tf.float32)))
    return build_input


def write_solver(tmp_path, config, **fields):
    """gen-model's nets and train solver in tmp_path, with solver fields overridden."""
    from caffessd.generators import build_solver
    from caffessd.protoio import prototxt_text, write_prototxt

    train, test = nets(config)
    write_prototxt(train, tmp_path / "train.prototxt")
    write_prototxt(test, tmp_path / "test.prototxt")
    write_prototxt(build_net(config, "deploy"), tmp_path / "deploy.prototxt")
    solver = build_solver(config, "train", str(tmp_path))
    solver.snapshot_prefix = str(tmp_path / "snap" / "net")
    (tmp_path / "snap").mkdir(exist_ok=True)
    for key, value in fields.items():
        field = getattr(solver, key)
        if hasattr(field, "extend"):
            del field[:]
            field.extend(value)
        else:
            setattr(solver, key, value)
    path = tmp_path / "solver.prototxt"
    path.write_text(prototxt_text(solver))
    return path

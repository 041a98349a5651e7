"""convert-tf --keras: a tf.keras.applications MobileNet(V2) as a gen-model backbone.

The Keras models are built with weights=None (no download), given random
BatchNorm statistics so that every BN matters, and saved as .h5. The Caffe
net's backbone feature maps (caffessd's ONNX path) must equal Keras's own
within 1e-4: block_13_expand_relu -> conv_13/expand, out_relu -> Conv_1 (v2),
conv_pw_11_relu -> conv11, conv_pw_13_relu -> conv13 (v1); read at the Caffe
nets' in-place ReLU6 layers (conv_13/expand/relu ...), i.e. after activation.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# TensorFlow is imported lazily (by the fixtures), never at collection time.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs TensorFlow: pip install 'caffessd[tf]'")

from caffessd.cli import main as cli_main  # noqa: E402

TOL = 1e-4


def _randomise_batch_norms(model, rng):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.6, 1.4, n), rng.uniform(-0.3, 0.3, n),
                               rng.uniform(-0.3, 0.3, n), rng.uniform(0.4, 1.6, n)])


V2_PAIRS = [("block_13_expand_relu", "conv_13/expand/relu"), ("out_relu", "Conv_1/relu")]
CASES = {
    # name: (constructor, alpha, input size, [(Keras layer, Caffe blob)])
    "mnv2": ("MobileNetV2", 1.0, 300, V2_PAIRS),
    # Keras keeps Conv_1 at 1280 below alpha 1 (gen-model's finegrain); 0.35 rounds
    # Conv to 16 channels, so the width is read from the last block.
    "mnv2-0.35-224": ("MobileNetV2", 0.35, 224, V2_PAIRS),
    "mnv1": ("MobileNet", 1.0, 320,
             [("conv_pw_11_relu", "conv11/relu"), ("conv_pw_13_relu", "conv13/relu")]),
}


# Keras 3 + NumPy 2 emit a DeprecationWarning per tensor conversion; not ours.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backbone", sorted(CASES))
def test_keras_backbone_feature_maps_match_keras(backbone, tmp_path, capsys):
    import keras

    constructor, alpha, size, pairs = CASES[backbone]
    build = getattr(keras.applications, constructor)
    rng = np.random.default_rng(7)
    model = build(weights=None, include_top=False, input_shape=(size, size, 3), alpha=alpha)
    _randomise_batch_norms(model, rng)
    h5 = tmp_path / f"{backbone}.h5"
    model.save(h5)

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert-tf", "--keras", str(h5), "-o", str(tmp_path / "out"),
                  "--input", str(size), "--num-classes", "3"])
    assert exit_info.value.code == 0
    assert "backbone layers initialised" in capsys.readouterr().out

    rgb = rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer(name).output for name, _ in pairs])
    want = [np.asarray(t).transpose(0, 3, 1, 2) for t in probe(rgb, training=False)]

    from caffessd.onnxconv import convert
    from caffessd.inference.session import run_onnx

    onnx_model = convert(str(tmp_path / "out" / "deploy.prototxt"),
                         str(tmp_path / "out" / "deploy.caffemodel"), raw=True,
                         extra_outputs=[blob for _, blob in pairs])
    bgr = np.ascontiguousarray(rgb[..., ::-1].transpose(0, 3, 1, 2))
    got = run_onnx(onnx_model, {"data": bgr})
    for (keras_name, blob), expected in zip(pairs, want):
        assert got[blob].shape == expected.shape, (blob, got[blob].shape, expected.shape)
        diff = float(np.abs(got[blob] - expected).max())
        assert diff < TOL, (keras_name, blob, diff)

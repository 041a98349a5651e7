"""TFNet: one phase of a Caffe train/test net running in TensorFlow.

    store = ParamStore.from_caffemodel(init_weights(train_param))   # shared by train and test nets
    net = TFNet(train_param, "TRAIN", store)
    ctx = net.forward({"data": images, "label": gt}, training=True)
    ctx.losses["mbox_loss"], ctx.stat_updates

Learnable blobs are tf.Variables in Caffe's blob order, keyed by layer name
(Caffe shares a train and a test net's blobs by layer name too). Each carries
its ParamSpec multipliers (lr_mult, decay_mult) and its BlobLayout: filters are
kept in TensorFlow's layout (caffessd.train.executor.layouts), and
`arrays()`/`assign()` speak Caffe's. BatchNorm's three blobs are statistics,
never trained by gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError, UnsupportedLayerError
from caffessd.layers import DATA_LAYER_TYPES
from caffessd.net import Net, filter_phase
from caffessd.train.executor.context import ForwardContext
from caffessd.train.executor.fusion import plan_batch_norm_scale
from caffessd.train.executor.layouts import BlobLayout
from caffessd.train.executor.normalization import batch_norm_scale
from caffessd.train.executor.registry import BUILDERS, storage_layouts
from caffessd.train.tfimport import tensorflow
from caffessd.generators.init_weights import init_weights

# Layers evaluated outside the graph (the trainer decodes and scores detections in numpy).
EVALUATION_TYPES = {"DetectionOutput", "DetectionEvaluate", "Accuracy"}
# Layers whose tops are fed from outside the graph.
INPUT_TYPES = DATA_LAYER_TYPES | {"Input"}
# Loss layers: their matching runs in numpy, outside an XLA-compiled body.
LOSS_TYPES = {"MultiBoxLoss"}
# The blobs' dtype. float32 as Caffe; tests set float64 to tell an arithmetic
# error from float32 rounding (e.g. the distributed equality with BatchNorm).
PARAM_DTYPE = np.float32
# Run BatchNorm+Scale pairs as one fused op (caffessd.train.executor.fusion).
# False runs every layer on its own (the benchmark's "before", a check in tests).
FUSE_BN_SCALE = True


@dataclass
class Param:
    """One learnable blob: its variable and Caffe's per-parameter multipliers."""

    layer: str
    index: int
    variable: object
    lr_mult: float
    decay_mult: float
    trainable: bool  # False for BatchNorm statistics (updated by moving averages)
    layout: Optional[BlobLayout] = None  # how the variable keeps the Caffe blob (default: as Caffe)

    def __post_init__(self):
        if self.layout is None:
            self.layout = BlobLayout.caffe(tuple(self.variable.shape))

    @property
    def name(self) -> str:
        return f"{self.layer}[{self.index}]"


class ParamStore:
    """Layer name -> learnable blobs, created once and shared by the nets of a solver."""

    def __init__(self):
        self.variables: Dict[str, List[object]] = {}
        self.layouts: Dict[str, List[BlobLayout]] = {}   # how each variable keeps its Caffe blob
        self.params: List[Param] = []

    def ensure(self, info, initial: List[np.ndarray]) -> None:
        """Create the layer's variables from `initial` unless they exist (checking shapes)."""
        tf = tensorflow()
        layouts = storage_layouts(info)
        if info.name in self.variables:
            for i, (layout, shape) in enumerate(zip(self.layouts[info.name], info.param_shapes)):
                if layout.caffe_shape != tuple(shape):
                    raise CaffessdError(f"layer '{info.name}' blob {i} is {layout.caffe_shape} in one net and "
                                        f"{tuple(shape)} in another")
                if layout != layouts[i]:
                    raise CaffessdError(f"layer '{info.name}' blob {i} is used differently in two nets "
                                        f"(e.g. another convolution group)")
            return
        specs = list(info.layer.param)
        variables = []
        for i, array in enumerate(initial):
            spec = specs[i] if i < len(specs) else caffe_pb2.ParamSpec()
            trainable = info.type != "BatchNorm"
            # Statistics are written inside a (possibly replicated) step with the
            # same value on every replica: the first replica's write is kept.
            aggregation = tf.VariableAggregation.NONE if trainable else tf.VariableAggregation.ONLY_FIRST_REPLICA
            var = tf.Variable(layouts[i].to_stored(np.asarray(array, PARAM_DTYPE).reshape(info.param_shapes[i])),
                              name=f"{info.name.replace('/', '_')}_{i}", trainable=trainable, aggregation=aggregation)
            variables.append(var)
            self.params.append(Param(info.name, i, var, float(spec.lr_mult), float(spec.decay_mult), trainable,
                                     layouts[i]))
        self.variables[info.name] = variables
        self.layouts[info.name] = layouts[:len(variables)]

    def trainable(self) -> List[Param]:
        return [p for p in self.params if p.trainable]

    def caffe_shapes(self) -> Dict[str, List[tuple]]:
        """Layer name -> its blobs' shapes in Caffe's layout."""
        return {name: [layout.caffe_shape for layout in layouts] for name, layouts in self.layouts.items()}

    def arrays(self) -> Dict[str, List[np.ndarray]]:
        """Layer name -> its blobs in Caffe's layout (what a caffemodel holds)."""
        return {name: [layout.to_caffe(v.numpy()) for v, layout in zip(vs, self.layouts[name])]
                for name, vs in self.variables.items()}

    def assign(self, weights: Dict[str, List[np.ndarray]]) -> None:
        """Set blobs from Caffe-layout arrays (any shape of the blob's size)."""
        for name, arrays in weights.items():
            for var, layout, array in zip(self.variables.get(name, []), self.layouts.get(name, []), arrays):
                var.assign(layout.to_stored(np.asarray(array, var.dtype.as_numpy_dtype)))


def data_input_shapes(param: caffe_pb2.NetParameter, batch: Optional[int] = None) -> Dict[str, tuple]:
    """Shapes of the data layers' image tops (batch from data_param unless given)."""
    shapes = {}
    for layer in param.layer:
        if layer.type in DATA_LAYER_TYPES and layer.top:
            n = batch or (layer.data_param.batch_size if layer.HasField("data_param") else 1) or 1
            resize = layer.transform_param.resize_param
            h, w = resize.height, resize.width
            if not (h and w) and layer.transform_param.crop_size:
                h = w = layer.transform_param.crop_size
            if h and w:
                shapes[layer.top[0]] = (int(n), 3, int(h), int(w))
    return shapes


class TFNet:
    """The layers of one phase with their shapes, and a forward pass in TensorFlow."""

    def __init__(self, param: caffe_pb2.NetParameter, phase: str, store: ParamStore,
                 initial: Optional[Dict[str, List[np.ndarray]]] = None, source: Optional[str] = None,
                 input_shapes: Optional[Dict[str, tuple]] = None):
        self.phase = phase.upper()
        self.param = filter_phase(param, self.phase)
        self.net = Net(self.param, source=source)
        self.source = source
        self.store = store
        self.options: Dict[str, object] = {}   # read by layers through ForwardContext.options
        shapes = data_input_shapes(self.param)
        shapes.update(input_shapes or {})
        self.infos = list(self.net.walk(shapes, with_weights=False))
        self.data_layers = [i for i in self.infos if i.type in INPUT_TYPES]
        self.bn_scale = plan_batch_norm_scale(self.infos)       # BatchNorm name -> its Scale
        self.image_shape = next((i.output_shapes[0] for i in self.data_layers), None)
        for info in self.infos:
            if info.type in INPUT_TYPES or info.type in EVALUATION_TYPES:
                continue
            if info.type not in BUILDERS:
                raise UnsupportedLayerError(info.name, info.type, "supported by the trainer", source)
            if info.param_shapes:
                arrays = (initial or {}).get(info.name)
                if arrays is None and info.name not in store.variables:
                    raise CaffessdError(f"layer '{info.name}' has no initial weights")
                store.ensure(info, arrays or [])

    @property
    def loss_layers(self) -> List[str]:
        return [i.name for i in self.infos if i.type in LOSS_TYPES]

    def loss_inputs(self) -> List[str]:
        """The blobs the loss layers read that the net computes (not the fed data tops):
        what an XLA-compiled body hands to the losses."""
        fed = {top for info in self.data_layers for top in info.layer.top}
        blobs = []
        for info in self.infos:
            if info.type in LOSS_TYPES:
                blobs.extend(b for b in info.layer.bottom if b not in fed and b not in blobs)
        return blobs

    def forward(self, feeds: Dict[str, object], training: Optional[bool] = None, update_stats: bool = False,
                stop_after: Optional[str] = None, compute_dtype=None, fuse: Optional[bool] = None,
                part: str = "all") -> ForwardContext:
        """Run the layers on `feeds` ({data top: NCHW tensor}); returns the context with all blobs.
        `fuse`: BatchNorm+Scale pairs as one op (default FUSE_BN_SCALE); False gives every
        layer its own output (the trainer's diagnosis of a non-finite loss).
        `part`: "all" layers, the "body" (all but the loss layers) or only the "losses"
        (fed the body's loss_inputs() besides the data tops)."""
        training = self.phase == "TRAIN" if training is None else training
        ctx = ForwardContext(self.store.variables, training, update_stats, compute_dtype, self.options,
                             layouts=self.store.layouts)
        tf = ctx.tf
        for blob, value in feeds.items():
            if compute_dtype is not None and value.dtype.is_floating and blob == self.data_layers[0].layer.top[0]:
                value = tf.cast(value, compute_dtype)
            ctx.feed(blob, value)
        fuse = FUSE_BN_SCALE if fuse is None else fuse
        fused_now = set()
        for info in self.infos:
            if info.type in INPUT_TYPES or info.type in EVALUATION_TYPES:
                continue
            if (part == "body" and info.type in LOSS_TYPES) or (part == "losses" and info.type not in LOSS_TYPES):
                continue
            partner = self.bn_scale.get(info.name) if fuse and info.name != stop_after else None
            if partner is not None:
                batch_norm_scale(ctx, info, partner)
                fused_now.add(partner.name)
            elif info.name not in fused_now:  # a fused pair's Scale ran with its BatchNorm
                BUILDERS[info.type](ctx, info)
            if stop_after is not None and info.name == stop_after:
                break
        return ctx

    def layer_names_in_order(self) -> List[str]:
        return [i.name for i in self.infos]


def initial_weights(param: caffe_pb2.NetParameter, seed: int = 0, phase: str = "TRAIN") -> Dict[str, List[np.ndarray]]:
    """Blobs drawn from the `phase` net's fillers, BatchNorm statistics at Caffe's zeros."""
    model = init_weights(filter_phase(param, phase), seed=seed, bn_stats="zero")
    return protoio.layer_blobs(model)

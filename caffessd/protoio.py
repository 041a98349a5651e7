"""Reading and writing Caffe files: prototxt text, caffemodel binaries, blobs.

Everything here works on the messages of `caffessd.caffe_pb2`, which is
generated from proto/caffe.proto (wire- and text-compatible with the SSD fork
of Caffe). Readers raise `FormatError` naming the file (and the line, for
text); writers go through a temporary file and a rename so that an error never
leaves half a file behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from google.protobuf import message as _pb_message
from google.protobuf import text_format

from caffessd import caffe_pb2
from caffessd.errors import FormatError
from caffessd.util.files import atomic_write, read_bytes

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------- text (prototxt)

def parse_prototxt_text(text: str, message, path: PathLike | None = None):
    """Parse prototxt `text` into `message` (an instance), naming `path` on error."""
    # Windows editors add a UTF-8 byte-order mark and CRLF line ends; protobuf
    # chokes on the former and would quote a raw \r from the latter.
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        detail = str(exc)
        # ParseError's text starts with "line:col : "; keep only the reason.
        if " : " in detail:
            detail = detail.split(" : ", 1)[1]
        raise FormatError(path, f"not a valid {type(message).__name__} prototxt: {detail}", line) from None
    return message


def read_prototxt(path: PathLike, message_type=caffe_pb2.NetParameter):
    """Read a text-format Caffe file (net, solver, labelmap...) into a new message."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(path, "is not a text prototxt (it is not UTF-8 text; a binary caffemodel?)") from None
    return parse_prototxt_text(text, message_type(), path)


def prototxt_text(message) -> str:
    """Text format the way Caffe writes it: 2-space indent, shortest float repr."""
    return text_format.MessageToString(message)


def write_prototxt(message, path: PathLike) -> Path:
    return atomic_write(path, prototxt_text(message))


# ---------------------------------------------------------------- binary (caffemodel)

def read_caffemodel(path: PathLike) -> caffe_pb2.NetParameter:
    """Read a binary caffemodel as it is (no upgrade; bytes round-trip unchanged)."""
    raw = read_bytes(path)
    if _looks_like_text_net(raw):
        raise FormatError(path, "looks like a text prototxt, expected a binary caffemodel")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(raw)
    except (_pb_message.DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(path, f"is not a binary caffemodel (protobuf decode failed: {exc})") from None
    if not net.layer and not net.layers:
        raise FormatError(path, "is not a caffemodel: it holds no layers")
    return net


def _looks_like_text_net(raw: bytes) -> bool:
    head = raw[:256].lstrip()
    return head.startswith((b"name", b"layer", b"input", b"#", b"force_backward"))


def write_caffemodel(net: caffe_pb2.NetParameter, path: PathLike) -> Path:
    return atomic_write(path, serialize(net))


def serialize(message) -> bytes:
    """Binary encoding with every field, known or not, in field-number order.

    Caffe forks add their own fields (the fixture face detector carries four
    in LayerParameter and three in TransformationParameter that the SSD fork
    does not define). Python protobuf keeps such unknown fields but writes them
    after the known ones, whereas the C++ Caffe that wrote the file knew them
    and wrote everything in number order. Merging them back into order makes a
    read-then-write round trip byte-identical.
    """
    if not _has_unknown_fields(message):
        return message.SerializeToString()
    parts = []
    for field, value in message.ListFields():
        if field.message_type is not None:
            items = value if field.is_repeated else [value]
            for item in items:
                body = serialize(item)
                parts.append((field.number, _tag(field.number, 2) + _varint(len(body)) + body))
        else:
            only_this = type(message)()
            if field.is_repeated:
                getattr(only_this, field.name).extend(value)
            else:
                setattr(only_this, field.name, value)
            parts.append((field.number, only_this.SerializeToString()))
    for unknown in _unknown_fields(message):
        parts.append((unknown.field_number, _encode_unknown(unknown)))
    parts.sort(key=lambda part: part[0])  # stable: repeated entries keep their order
    return b"".join(encoded for _, encoded in parts)


def _unknown_fields(message):
    from google.protobuf import unknown_fields

    return list(unknown_fields.UnknownFieldSet(message))


def _has_unknown_fields(message) -> bool:
    if _unknown_fields(message):
        return True
    for field, value in message.ListFields():
        if field.message_type is not None:
            items = value if field.is_repeated else [value]
            if any(_has_unknown_fields(item) for item in items):
                return True
    return False


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _encode_unknown(field) -> bytes:
    number, wire_type, data = field.field_number, field.wire_type, field.data
    if wire_type == 0:
        return _tag(number, 0) + _varint(data)
    if wire_type == 1:
        return _tag(number, 1) + int(data).to_bytes(8, "little")
    if wire_type == 5:
        return _tag(number, 5) + int(data).to_bytes(4, "little")
    if wire_type == 2:
        return _tag(number, 2) + _varint(len(data)) + bytes(data)
    if wire_type == 3:  # group: its own unknown-field set, then an end-group tag
        inner = b"".join(_encode_unknown(sub) for sub in data)
        return _tag(number, 3) + inner + _tag(number, 4)
    raise ValueError(f"unknown protobuf wire type {wire_type}")


def read_labelmap(path: PathLike) -> caffe_pb2.LabelMap:
    labelmap = read_prototxt(path, caffe_pb2.LabelMap)
    if not labelmap.item:
        raise FormatError(path, "labelmap has no `item` entries")
    return labelmap


def labelmap_names(path: PathLike) -> dict:
    """{label id: display name (or name)} from a labelmap.prototxt."""
    return {item.label: (item.display_name or item.name) for item in read_labelmap(path).item}


# ---------------------------------------------------------------- blobs

def blob_shape(blob: caffe_pb2.BlobProto) -> tuple:
    """The N-d shape of a blob, reading the legacy num/channels/height/width form too."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return (len(blob.data) or len(blob.double_data),)


def blob_to_array(blob: caffe_pb2.BlobProto) -> np.ndarray:
    shape = blob_shape(blob)
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    else:
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"blob holds {values.size} values but its shape {shape} needs {int(np.prod(shape))}")
    return values.reshape(shape)


def array_to_blob(array, blob: caffe_pb2.BlobProto | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto (N-d `shape` + packed float data) holding `array`.

    Built from the packed bytes rather than a Python list of floats: about 25x
    faster, which matters for nets with millions of weights."""
    array = np.asarray(array, dtype="<f4")  # little-endian float32, C order in tobytes()
    shape = caffe_pb2.BlobShape(dim=[int(d) for d in array.shape]).SerializeToString()
    raw = _length_delimited(7, shape)  # field 7 = shape, always present
    if array.size:
        raw += _length_delimited(5, array.tobytes())  # field 5 = packed data
    blob = blob if blob is not None else caffe_pb2.BlobProto()
    blob.Clear()
    blob.MergeFromString(raw)
    return blob


def caffemodel_from(param: caffe_pb2.NetParameter, weights: dict) -> caffe_pb2.NetParameter:
    """A caffemodel: the layers of `param` carrying the blobs in `weights`
    ({layer name: [array, ...]}), as Caffe's Net::ToProto writes them."""
    model = caffe_pb2.NetParameter()
    model.CopyFrom(param)
    for layer in model.layer:
        del layer.blobs[:]
        for array in weights.get(layer.name, []):
            array_to_blob(array, layer.blobs.add())
    return model


def upgrade_blob_shape(blob: caffe_pb2.BlobProto) -> None:
    """Rewrite a legacy 4-d blob (num/channels/height/width) to the `shape` form."""
    if blob.HasField("shape"):
        return
    shape = blob_shape(blob)
    for name in ("num", "channels", "height", "width"):
        blob.ClearField(name)
    blob.shape.dim.extend(shape)


# ---------------------------------------------------------------- V1 -> current net upgrade

_V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V1 fields that LayerParameter has under the same name and type.
_V1_SHARED_FIELDS = (
    "bottom", "top", "name", "include", "exclude", "loss_weight", "blobs",
    "transform_param", "loss_param",
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param", "image_data_param",
    "infogain_loss_param", "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param", "slice_param",
    "tanh_param", "threshold_param", "window_data_param",
)


def upgrade_v1_layer(old: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    new = caffe_pb2.LayerParameter()
    for field in _V1_SHARED_FIELDS:
        descriptor = old.DESCRIPTOR.fields_by_name[field]
        if descriptor.is_repeated:
            getattr(new, field).extend(getattr(old, field))
        elif old.HasField(field):
            value = getattr(old, field)
            if descriptor.message_type is not None:
                getattr(new, field).CopyFrom(value)
            else:
                setattr(new, field, value)
    if old.HasField("type"):
        enum_name = caffe_pb2.V1LayerParameter.LayerType.Name(old.type)
        new.type = _V1_TYPE_NAMES.get(enum_name, enum_name.title())
    # Per-blob learning settings moved from flat lists into ParamSpec.
    count = max(len(old.param), len(old.blobs_lr), len(old.weight_decay), len(old.blob_share_mode))
    for i in range(count):
        spec = new.param.add()
        if i < len(old.param):
            spec.name = old.param[i]
        if i < len(old.blob_share_mode):
            spec.share_mode = old.blob_share_mode[i]
        if i < len(old.blobs_lr):
            spec.lr_mult = old.blobs_lr[i]
        if i < len(old.weight_decay):
            spec.decay_mult = old.weight_decay[i]
    return new


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """Return a copy of `net` in today's form: `layer` not `layers`, N-d blob shapes,
    input_dim as input_shape. The argument is left untouched."""
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    if net.layers:
        if net.layer:
            raise ValueError("net mixes legacy `layers` and current `layer` entries")
        upgraded.ClearField("layers")
        for old in net.layers:
            upgraded.layer.append(upgrade_v1_layer(old))
    if upgraded.input_dim:
        dims = list(upgraded.input_dim)
        upgraded.ClearField("input_dim")
        for i in range(len(upgraded.input)):
            upgraded.input_shape.add().dim.extend(dims[4 * i:4 * i + 4])
    for layer in upgraded.layer:
        for blob in layer.blobs:
            upgrade_blob_shape(blob)
    return upgraded


def read_net(path: PathLike, binary_ok: bool = True) -> caffe_pb2.NetParameter:
    """Read a prototxt or caffemodel (decided by content) and upgrade it.

    With `binary_ok=False` only a text prototxt is accepted, so a caffemodel
    given where the net description belongs is reported as such."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
        is_text = True
    except UnicodeDecodeError:
        is_text = False
    if is_text:
        net = parse_prototxt_text(text, caffe_pb2.NetParameter(), path)
        if not net.layer and not net.layers and not net.input:
            raise FormatError(path, "holds no layers and no inputs (an empty prototxt?)")
    elif not binary_ok:
        raise FormatError(path, "is a binary file (a caffemodel?), expected a text prototxt")
    else:
        net = read_caffemodel(path)
    try:
        return upgrade_net(net)
    except ValueError as exc:
        raise FormatError(path, str(exc)) from None


def layer_blobs(net: caffe_pb2.NetParameter) -> dict:
    """{layer name: [np.ndarray, ...]} for every layer of `net` that has blobs."""
    weights = {}
    for layer in net.layer:
        if layer.blobs:
            weights[layer.name] = [blob_to_array(b) for b in layer.blobs]
    for old in net.layers:
        if old.blobs:
            weights[old.name] = [blob_to_array(b) for b in old.blobs]
    return weights


def iter_layer_names(net: caffe_pb2.NetParameter) -> Iterable[str]:
    for layer in net.layer:
        yield layer.name
    for old in net.layers:
        yield old.name

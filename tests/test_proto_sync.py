"""caffessd/caffe_pb2.py must be what proto/caffe.proto compiles to.

Compared as descriptors (not text) so that protoc's version banner does not
matter. Regenerate with `python scripts/gen_proto.py`.
"""
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from caffessd import caffe_pb2
from conftest import ROOT


def test_generated_module_matches_schema(tmp_path):
    pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "caffe.desc"
    # protoc in a child process: in-process it crashes once TensorFlow is loaded.
    status = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                             f"--descriptor_set_out={out}", str(ROOT / "proto" / "caffe.proto")]).returncode
    assert status == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(caffe_pb2.DESCRIPTOR.serialized_pb)
    # --descriptor_set_out adds json names and prints float defaults with
    # fewer digits than --python_out; neither changes the schema.
    for file_proto in (compiled, committed):
        _normalise(file_proto)
    assert compiled == committed, "caffessd/caffe_pb2.py is stale: run `python scripts/gen_proto.py`"


def test_ssd_fork_field_numbers():
    # Spot checks of numbers that other Caffe forks assign differently.
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["norm_param"].number == 206
    assert fields["prior_box_param"].number == 203
    assert fields["detection_output_param"].number == 204
    assert fields["annotated_data_param"].number == 200
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["shape"].number == 7


def _normalise(file_proto):
    float_types = (descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT, descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE)

    def walk(messages):
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
                if field.type in float_types and field.HasField("default_value"):
                    field.default_value = repr(float(np.float32(field.default_value)))
            walk(message.nested_type)
    walk(file_proto.message_type)

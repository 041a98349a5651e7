#!/usr/bin/env python3
"""Regenerate caffessd/caffe_pb2.py from proto/caffe.proto.

Needs grpcio-tools (part of the `test` extra), which bundles protoc:

    python scripts/gen_proto.py

tests/test_proto_sync.py fails when the committed module and the schema
disagree, so run this after every edit of proto/caffe.proto.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={ROOT / 'caffessd'}",
        str(ROOT / "proto" / "caffe.proto"),
    ]
    status = protoc.main(args)
    if status == 0:
        print(f"wrote {ROOT / 'caffessd' / 'caffe_pb2.py'}")
    return status


if __name__ == "__main__":
    sys.exit(main())

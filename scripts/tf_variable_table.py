#!/usr/bin/env python
"""Print, per supported TF model, which TF variables convert-tf reads and the
Caffe layer each feeds (markdown, from caffessd.tfconvert.zoo's catalogue).

    python scripts/tf_variable_table.py [--classes 90] [--width 1.0] > table.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caffessd.tfconvert.zoo import ARCHITECTURES, ZOO_MODELS, build_spec  # noqa: E402


def rows(spec):
    for conv in spec.convs():
        if conv.batch_norm:
            reads = f"`{conv.weight_name.rsplit('/', 1)[1]}`, `BatchNorm/{{gamma,beta,moving_mean,moving_variance}}`"
            feeds = f"`{conv.caffe_layer}` + `{conv.caffe_layer}/bn` + `{conv.caffe_layer}/scale`"
        else:
            reads = f"`{conv.weight_name.rsplit('/', 1)[1]}`, `biases`"
            feeds = f"`{conv.caffe_layer}` (channels reordered)"
        kind = "depthwise" if conv.depthwise else f"{conv.kernel}x{conv.kernel}"
        shape = "x".join(str(d) for d in conv.weight_shape)
        yield f"| `{conv.tf_scope}` | {reads} | {kind}/{conv.stride}, {shape} | {feeds} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=90)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args(argv)
    names = {arch: zoo for zoo, arch in ZOO_MODELS.items()}
    for arch in ARCHITECTURES:
        spec = build_spec(arch, args.classes, args.width)
        count = len(spec.variables())
        print(f"<details><summary>{names[arch]}: {count} variables, {len(spec.convs())} convolutions"
              "</summary>\n")
        print("| TF scope | variables read | kernel/stride, TF shape | Caffe layer(s) fed |")
        print("|---|---|---|---|")
        for row in rows(spec):
            print(row)
        print("\n</details>\n")


if __name__ == "__main__":
    main()

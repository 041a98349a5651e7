"""Parsing of option values shared by several subcommands.

Each parser raises CaffessdError with a message naming the option, which the
CLI prints as one line."""
from __future__ import annotations

from typing import List, Optional, Tuple

from caffessd.errors import CaffessdError
from caffessd.validate.memory import parse_bytes, set_limit


def parse_size(text: str, option: str = "--input") -> Tuple[int, int]:
    """'300' -> (300, 300); '320x240' -> (320, 240), as (width, height)."""
    try:
        values = [int(part) for part in text.lower().replace(",", "x").split("x")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise CaffessdError(f"{option} must be N or WIDTHxHEIGHT with positive integers (e.g. 300, 320x240), got '{text}'")
    return values[0], values[-1]


def parse_floats(text: str, option: str) -> List[float]:
    """'127.5' or '104,117,123' -> a list of floats."""
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CaffessdError(f"{option} expects comma-separated numbers, got '{text}'") from None


def optional_floats(text: Optional[str], option: str) -> Optional[List[float]]:
    return None if text is None else parse_floats(text, option)


def max_memory_option(command):
    """`--max-memory SIZE` for commands that shape a net: sets the process-wide
    limit of caffessd.validate.memory before the net is read."""
    import click

    def apply(ctx, param, value):
        if value is not None:
            set_limit(parse_bytes(value))
        return value

    return click.option("--max-memory", callback=apply, expose_value=False, is_eager=True,
                        help="refuse nets needing more memory than this (e.g. 2G; default: what the machine has)")(command)


ENGINE_NAMES = ("onnxruntime", "openvino", "ncnn", "tflite")   # caffessd.inference.engines.ENGINE_NAMES


def engine_options(command):
    """--engine, --device and --precision for commands that run a model
    (detect, eval): the runtime and how it runs (caffessd.inference.engines)."""
    import click

    for option in reversed([
        click.option("--engine", type=click.Choice(ENGINE_NAMES), default=None,
                     help="runtime for the model [default: by file type: .onnx onnxruntime, .xml openvino, "
                          ".param ncnn, .tflite tflite; Caffe models run on onnxruntime]"),
        click.option("--device", type=click.Choice(["cpu", "cuda", "tensorrt"]), default=None,
                     help="where onnxruntime runs: its CPU, CUDA or TensorRT execution provider (the GPU ones "
                          "need onnxruntime-gpu) [default: cpu]"),
        click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]), default=None,
                     help="inference precision: bf16 on OpenVINO where the CPU has AVX-512 BF16 or AMX, f16 "
                          "with --device tensorrt [default: f32]"),
    ]):
        command = option(command)
    return command


DATASET_SPLIT_HELP = ("voc: trainval|test|...; coco: val2017|train2017|...; wider: train|val; kitti: training or "
                      "ImageSets/<split>.txt; yolo: a data.yaml split (train|val|test) or images/<split>/; "
                      "openimages: validation|train|test; cvat: an image subset; labelme: a subfolder")


def layout_options(command):
    """`--images DIR` and `--annotations PATH`: where a format's images and
    annotations are when they are not where its layout puts them."""
    import click

    command = click.option(
        "--annotations", type=click.Path(exists=True),
        help="the annotations when not where the format keeps them: coco instances JSON, openimages boxes CSV, "
             "cvat XML, wider bbx_gt file; voc Annotations, kitti label_2, yolo labels or labelme JSON folder")(command)
    return click.option("--images", type=click.Path(exists=True, file_okay=False),
                        help="the folder of the images when not where the format keeps them")(command)

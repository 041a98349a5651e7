"""Entry points: plan, build and write the nets, solvers and initial weights.

    config = SSDConfig(backbone="mnv2", head="ssdlite", input_width=640, input_height=640, num_classes=2)
    plan = plan_net(config)            # feature layers, their map sizes, priors
    deploy = build_net(config, "deploy")
    paths = generate(config, "out/", stages=("train", "test", "deploy"), init_weights="out/init.caffemodel")

Every net of one configuration has the same layer names, so one caffemodel
serves all stages; the data model a converter needs is `NetPlan`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from caffessd import caffe_pb2, protoio
from caffessd.errors import CaffessdError
from caffessd.generators import data, heads
from caffessd.generators.backbones import backbone_module
from caffessd.generators.config import DEFAULT_FEATURE_LAYERS, STAGES, PriorSpec, SSDConfig
from caffessd.generators.init_weights import init_weights as _init_weights
from caffessd.generators.net_builder import NetBuilder, add_silence
from caffessd.generators.priors import prior_count, prior_specs
from caffessd.generators.solver import build_solver
from caffessd.util.files import atomic_write_many
from caffessd.netprep import with_preprocessing

NET_FILES = {"train": "train.prototxt", "test": "test.prototxt", "deploy": "deploy.prototxt"}
SOLVER_FILES = {"train": "solver_train.prototxt", "test": "solver_test.prototxt"}


@dataclass
class NetPlan:
    """What a configuration resolves to, before any layer text is written."""

    config: SSDConfig                     # with backbone defaults filled in
    feature_layers: List[str]             # blobs with a head, in head order
    feature_shapes: List[Tuple[int, int, int]]  # (channels, height, width) of each
    prior_specs: List[PriorSpec]
    extra_layers: int                     # extra layers appended after the backbone

    @property
    def feature_sizes(self) -> List[Tuple[int, int]]:
        return [(h, w) for _, h, w in self.feature_shapes]

    @property
    def boxes_per_cell(self) -> List[int]:
        return [spec.boxes_per_cell() for spec in self.prior_specs]

    @property
    def prior_count(self) -> int:
        return prior_count(self.prior_specs, self.feature_sizes)


def _checked(config: SSDConfig) -> SSDConfig:
    config.validate()
    resolved = config.resolved()
    resolved.validate()
    return resolved


def _build(config: SSDConfig, stage: str) -> Tuple[NetBuilder, NetPlan]:
    if stage not in STAGES:
        raise CaffessdError(f"--stage must be one of {', '.join(STAGES)} or all, got {stage!r}")
    config = _checked(config)
    b = NetBuilder(config, stage)
    if stage == "deploy":
        data.add_deploy_input(b)
    else:
        data.add_data_layer(b)

    module = backbone_module(config.backbone)
    blob = module.build_backbone(b, "data")
    extras = max([module.extra_index(f) or 0 for f in config.feature_layers], default=0)
    for k in range(1, extras + 1):
        blob = module.build_extra(b, k, blob)
    features = _check_feature_layers(b, config)
    add_silence(b, "silence", b.margins)

    shapes = [b.shape(f) for f in features]
    specs = prior_specs(config, [(h, w) for _, h, w in shapes])
    loc, conf, priors = heads.add_heads(b, features, specs)
    if stage == "train":
        heads.add_loss(b, loc, conf, priors)
    else:
        heads.add_detection_output(b, loc, conf, priors)
        if stage == "test":
            heads.add_detection_evaluate(b)
    return b, NetPlan(config, features, shapes, specs, extras)


def _check_feature_layers(b: NetBuilder, config: SSDConfig) -> List[str]:
    candidates = b.feature_candidates
    for name in config.feature_layers:
        if name not in candidates:
            examples = ", ".join(DEFAULT_FEATURE_LAYERS[config.backbone])
            raise CaffessdError(f"feature layer '{name}' does not exist in the {config.backbone} net "
                                f"(its layers are named like {examples})")
    order = [candidates.index(name) for name in config.feature_layers]
    if order != sorted(order):
        raise CaffessdError("--feature-layers must be listed from shallow to deep: "
                            + ",".join(sorted(config.feature_layers, key=candidates.index)))
    return list(config.feature_layers)


def plan_net(config: SSDConfig) -> NetPlan:
    """Validate `config` and resolve its feature layers, map sizes and priors."""
    return _build(config, "deploy")[1]


def build_net(config: SSDConfig, stage: str) -> caffe_pb2.NetParameter:
    """The train, test or deploy NetParameter of `config`."""
    return _build(config, stage)[0].net


def classes_from_labelmap(path) -> int:
    """Number of classes (background included) of a labelmap: its highest label + 1."""
    labelmap = protoio.read_labelmap(path)
    labels = [item.label for item in labelmap.item]
    if len(set(labels)) != len(labels):
        raise CaffessdError(f"{path}: labelmap uses a label twice")
    if min(labels) != 0:
        raise CaffessdError(f"{path}: labelmap has no label 0 (the background class)")
    return max(labels) + 1


def generate(config: SSDConfig, out_dir, stages: Sequence[str] = STAGES, init_weights=None,
             seed: int = 0, progress: Optional[Callable[[str], None]] = None) -> List[Path]:
    """Write the nets of `stages` (plus their solvers) into `out_dir`, and with
    `init_weights` a caffemodel filled from the layer fillers. Everything is
    built before the first file is written, so a bad option writes nothing.
    Returns the written paths."""
    out_dir = Path(out_dir)
    outputs = []
    for stage in stages:
        outputs.append((out_dir / NET_FILES[stage], build_net(config, stage)))
    for kind in ("train", "test"):
        if kind in stages:
            outputs.append((out_dir / SOLVER_FILES[kind], build_solver(config, kind, str(out_dir))))
    model = None
    if init_weights is not None:
        deploy = build_net(config, "deploy")
        model = _init_weights(deploy, seed=seed, progress=progress)
    files = [(path, protoio.prototxt_text(message)) for path, message in outputs]
    if "deploy" in stages:
        # The deploy net cannot say how images are prepared; a caffessd note can (Caffe ignores it).

        at = list(stages).index("deploy")
        files[at] = (files[at][0], with_preprocessing(files[at][1], config.mean, config.scale))
    if model is not None:
        files.append((init_weights, protoio.serialize(model)))
    return atomic_write_many(files)  # all or none

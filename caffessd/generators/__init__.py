"""Generators of MobileNet-SSD, MobileNetV2-SSD and SSDLite nets for Caffe.

Public API:
    SSDConfig, PriorSpec        options of a net (config.py)
    plan_net(config)            -> NetPlan: feature layers, map sizes, priors
    build_net(config, stage)    -> NetParameter for 'train', 'test' or 'deploy'
    build_solver(config, kind)  -> SolverParameter for 'train' or 'test'
    generate(config, out_dir, stages=..., init_weights=...) -> written paths
    init_weights(net)           -> caffemodel NetParameter from the layer fillers
    classes_from_labelmap(path) -> number of classes of a labelmap

May import: util and the core.
"""
from caffessd.generators.build import (
    NET_FILES, SOLVER_FILES, NetPlan, build_net, classes_from_labelmap, generate, plan_net,
)
from caffessd.generators.config import PriorSpec, SSDConfig
from caffessd.generators.init_weights import init_weights
from caffessd.generators.solver import build_solver

__all__ = [
    "SSDConfig", "PriorSpec", "NetPlan", "plan_net", "build_net", "build_solver", "generate",
    "init_weights", "classes_from_labelmap", "NET_FILES", "SOLVER_FILES",
]

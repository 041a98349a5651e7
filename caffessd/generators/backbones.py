"""Backbone registry: `--backbone` name -> module with build_backbone/build_extra."""
from __future__ import annotations

from types import ModuleType
from caffessd.generators import mobilenet_v1, mobilenet_v2

BACKBONE_MODULES = {"mnv1": mobilenet_v1, "mnv2": mobilenet_v2}


def backbone_module(name: str) -> ModuleType:
    return BACKBONE_MODULES[name]

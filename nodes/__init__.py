"""ComfyUI nodes of the pack: thin V3 wrappers around :mod:`trainer_core`."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .losses import LossBuilder
from .optimizer import OptimizerConfigNode
from .timesteps import TimestepSampler

NODES: list[type[io.ComfyNode]] = [TimestepSampler, LossBuilder, OptimizerConfigNode]


class FlowLoraExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)

"""ComfyUI nodes of the pack: thin V3 wrappers around :mod:`trainer_core`."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .dataset import DatasetNode
from .lora import LORA_NODES
from .losses import LossBuilder
from .optimizer import OptimizerConfigNode
from .plots import ImageGrid, TrainingPlots
from .preview import TrainingPreview
from .strength_grid import LoraStrengthGrid
from .style import StyleDistance
from .timesteps import TimestepSampler
from .trainer import LoraTrainer
from .u1 import U1_NODES
from .validation import ValidationNode

NODES: list[type[io.ComfyNode]] = [TimestepSampler, LossBuilder, OptimizerConfigNode]
NODES += U1_NODES
NODES += LORA_NODES
NODES += [DatasetNode, LoraTrainer, TrainingPreview, ValidationNode]
NODES += [TrainingPlots, ImageGrid, StyleDistance]
NODES += [LoraStrengthGrid]


class FlowLoraExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)

"""ComfyUI nodes of the pack: thin V3 wrappers around :mod:`trainer_core`."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .dataset import DatasetNode
from .legacy_losses import LossBuilder
from .legacy_timesteps import TimestepSampler
from .lora import LORA_NODES
from .losses import LOSS_NODES
from .optimizer import OptimizerConfigNode
from .plots import ImageGrid, TrainingPlots
from .preview import TrainingPreview
from .strength_grid import LoraStrengthGrid
from .style import StyleDistance
from .timesteps import TIMESTEP_NODES
from .trainer import LoraTrainer
from .u1 import U1_NODES
from .validation import ValidationNode

NODES: list[type[io.ComfyNode]] = [*TIMESTEP_NODES, *LOSS_NODES, OptimizerConfigNode]
NODES += U1_NODES
NODES += LORA_NODES
NODES += [DatasetNode, LoraTrainer, TrainingPreview, ValidationNode]
NODES += [TrainingPlots, ImageGrid, StyleDistance]
NODES += [LoraStrengthGrid]
NODES += [TimestepSampler, LossBuilder]  # deprecated: saved workflows still load and run


class FlowLoraExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)

"""Optimizer Config node: optimizer, lr schedule, clipping and accumulation."""

from __future__ import annotations

from comfy_api.latest import io

from ..trainer_core import optim
from .types import CATEGORY, PREFIX, check_inputs, validation_message

Optimizer = io.Custom("FLOWLORA_OPTIMIZER")
"""A :class:`trainer_core.optim.OptimizerConfig` (stable name: saved workflows use it)."""


def build_config(optimizer: str, learning_rate: float, beta1: float, beta2: float, weight_decay: float, eps: float, momentum: float, schedule: str, warmup_steps: int, num_cycles: int, min_lr_ratio: float, max_grad_norm: float, grad_accumulation: int) -> optim.OptimizerConfig:
    """Node widgets -> :class:`OptimizerConfig`; raises ConfigError naming the bad field."""
    return optim.OptimizerConfig(
        optimizer=optimizer,
        lr=learning_rate,
        betas=(beta1, beta2),
        weight_decay=weight_decay,
        eps=eps,
        momentum=momentum,
        schedule=schedule,
        warmup_steps=warmup_steps,
        num_cycles=num_cycles,
        min_lr_ratio=min_lr_ratio,
        max_grad_norm=max_grad_norm,
        grad_accumulation=grad_accumulation,
    )


class OptimizerConfigNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{PREFIX}OptimizerConfig",
            display_name="Optimizer Config (FlowLoRA)",
            category=CATEGORY,
            description="Optimizer, learning-rate schedule, gradient clipping and gradient accumulation for the LoRA trainer. Steps here are optimizer updates (micro-batches / grad_accumulation).",
            inputs=[
                io.Combo.Input("optimizer", options=optim.OPTIMIZERS.names(), default="adamw", tooltip="adamw: torch AdamW. adamw8bit (AC-RF) / paged_adamw8bit (U1): bitsandbytes 8-bit AdamW, less optimizer memory; paged moves its state to host memory under GPU pressure. adafactor: factored moments, least memory. sgd: momentum SGD."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-8, max=1.0, step=1e-7, round=False, tooltip="Peak learning rate (AC-RF: 1e-4, U1: 5e-5). Adafactor uses it as the cap of its relative step size."),
                io.Float.Input("beta1", default=0.9, min=0.0, max=0.9999, step=0.001, round=False, tooltip="Adam family: decay of the gradient mean."),
                io.Float.Input("beta2", default=0.999, min=0.0, max=0.99999, step=0.0001, round=False, tooltip="Adam family: decay of the squared-gradient mean."),
                io.Float.Input("weight_decay", default=0.01, min=0.0, max=10.0, step=0.001, round=False, tooltip="Weight decay of every optimizer (decoupled in AdamW and Adafactor, L2 in SGD). 0 disables."),
                io.Float.Input("eps", default=1e-8, min=1e-12, max=1e-2, step=1e-9, round=False, tooltip="Adam family: added to the denominator for stability."),
                io.Float.Input("momentum", default=0.9, min=0.0, max=0.999, step=0.01, round=False, tooltip="sgd only: momentum (0 = plain SGD)."),
                io.Combo.Input("schedule", options=optim.SCHEDULES.names(), default="constant", tooltip="Learning-rate curve after warmup: constant, linear (to min_lr_ratio at the last step), cosine (half wave down to min_lr_ratio), cosine_with_restarts (num_cycles waves, each restarting at the peak; AC-RF)."),
                io.Int.Input("warmup_steps", default=0, min=0, max=1_000_000, tooltip="Optimizer updates over which the learning rate rises linearly from 0 to its peak. Must be below the total number of updates."),
                io.Int.Input("num_cycles", default=1, min=1, max=1000, tooltip="cosine_with_restarts only: number of cosine waves (hard restarts) over the decay."),
                io.Float.Input("min_lr_ratio", default=0.0, min=0.0, max=1.0, step=0.001, round=False, tooltip="Floor of the decaying schedules as a fraction of the peak (AC-RF: eta_min 1e-6 / eta_max 1e-4 = 0.01)."),
                io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=1000.0, step=0.01, round=False, tooltip="Clip the total gradient norm to this before each update; 0 disables clipping (the norm is still logged)."),
                io.Int.Input("grad_accumulation", default=1, min=1, max=1024, tooltip="Micro-batches whose gradients are averaged into one optimizer update (AC-RF: 4). Effective batch = batch size x this."),
            ],
            outputs=[
                Optimizer.Output(display_name="optimizer", tooltip="Optimizer settings for the trainer."),
            ],
        )

    @classmethod
    def validate_inputs(cls, **kw) -> bool | str:
        ranges = check_inputs(cls, kw)
        return ranges if ranges is not True else validation_message(build_config, **kw)

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        return io.NodeOutput(build_config(**kw))

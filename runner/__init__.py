"""Headless runner: train a workflow's LoRA Trainer outside the server, through ComfyUI's own
executor in-process, on one process or data-parallel under ``torchrun`` (``python -m flowlora.run``;
README "Headless and multi-GPU training")."""

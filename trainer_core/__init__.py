"""Pure training core of the pack: maths, LoRA engine, data and the step loop.

Imports only torch, numpy, safetensors, Pillow, peft and bitsandbytes; never
ComfyUI (``comfy``, ``folder_paths``, ``nodes``, ``server``). A test enforces it.
"""

__version__ = "0.1.0"

"""Datasets: image folders with captions, aspect buckets, cached encodings.

Modules, in the order data flows through them:

- :mod:`.images`   decode any image file to 8-bit RGB (EXIF, alpha, 16-bit, bombs)
- :mod:`.captions` same-stem captions, think sections, trigger/template, repeats
- :mod:`.buckets`  aspect buckets and the deterministic resize + crop plan
- :mod:`.cache`    content-keyed safetensors cache with atomic writes
- :mod:`.dataset`  the prepared :class:`~.dataset.Dataset` and its batch sampler
- :mod:`.prepare`  folder -> Dataset, calling the encoders only on cache misses

Nothing here imports ComfyUI; encoders arrive as plain callables.
"""

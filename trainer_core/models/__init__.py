"""Model implementations of the pack (pure PyTorch, no ComfyUI imports)."""

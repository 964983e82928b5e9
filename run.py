"""``python -m flowlora.run WORKFLOW.json [--set NODE.INPUT=VALUE ...]``: train a workflow's LoRA
Trainer headless, on one process or under ``torchrun`` (see :mod:`.runner.cli`)."""

from .runner.cli import main

if __name__ == "__main__":
    main()

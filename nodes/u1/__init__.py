"""SenseNova-U1 in ComfyUI: loader, prompt encoder, MODEL wrapper (see :mod:`.model`)."""

from .nodes import U1Loader, U1PromptEncode, U1SaveMergedCheckpoint, U1SaveOfficialLora

U1_NODES = [U1Loader, U1PromptEncode, U1SaveOfficialLora, U1SaveMergedCheckpoint]

"""Import another trainer's config as a workflow JSON that the frontend opens and the runner trains.

    python scripts/import_config.py train_u1/configs/default.yaml --out my_run.json     # train_u1 (YAML)
    python scripts/import_config.py acrf_config.toml --out acrf_run.json                  # AC-RF trainer (TOML)

Prints what changed from the template workflow and every setting that was not imported
(no equivalent, or approximated); the same list goes into the workflow as a note. Widget
layouts come from ComfyUI's node definitions, loaded in-process as the runner does
(``--comfyui`` / ``COMFYUI_PATH``; see runner/config_import.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flowlora_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a train_u1 YAML or AC-RF TOML config into a FlowLoRA workflow JSON.")
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, help="workflow JSON to write (default: <config name>.workflow.json beside the config)")
    parser.add_argument("--comfyui", help="ComfyUI folder (default: COMFYUI_PATH, the ComfyUI holding this pack, or the development host)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    flowlora_run.register_package()
    from flowlora.runner import config_import, host

    try:
        host.start(host.find_comfyui(args.comfyui), cpu=True)
        host.load_nodes([], other_custom_nodes=False)
        imported = config_import.import_config(args.config, host.object_info())
    except (host.HostError, config_import.ImportError_) as e:
        raise SystemExit(f"import_config: {e}") from None
    out = args.out or args.config.with_suffix(".workflow.json")
    out.write_text(json.dumps(imported.workflow, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(imported.report())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Thumbnails for ComfyUI's Templates browser: ``workflows/<name>.jpg``, each workflow as the frontend draws it.

    .venv/bin/python scripts/workflow_thumbnails.py          # starts a ComfyUI and Chromium, writes workflows/*.jpg
    .venv/bin/python scripts/workflow_thumbnails.py --url http://127.0.0.1:8188   # a running ComfyUI with the pack

Where ComfyUI looks (read in 0.3.75 and 0.33, frontends 1.32 and 1.49): the server's
``/workflow_templates`` lists every ``custom_nodes/<pack>/{example_workflows, example,
examples, workflow, workflows}/*.json`` and serves each such folder at
``/api/workflow_templates/<pack folder>/``; the Templates browser shows a pack's
workflows under Extensions > <pack folder>, and the thumbnail of a card is
``<name>.jpg`` from the same folder (``mediaSubtype: 'jpg'`` for every custom node
template; a stock picture when the file is missing). So the JPEGs sit beside
``workflows/*.json``. A second folder such as ``example_workflows`` would list every
workflow twice, and since both folders are served under the same URL prefix the
first one shadows the other.

Each picture is the whole graph in ComfyUI 0.3.75's frontend (1.32: model loaders
whose files are missing are not outlined in red as 1.49 outlines them), drawn into
a square, 512 x 512 pixels. The JPEG's comment records the SHA-256 of the JSON it
was made from; ``tests/test_browser_ui.py`` fails on a missing or stale thumbnail.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
COMMAND = ".venv/bin/python scripts/workflow_thumbnails.py"
SIZE = 512
"""Pixels on a side; the cards show it in a square of about 250 pixels (a 2x screen's worth)."""
SQUARE = 1100
"""Page pixels on a side of the square the graph is drawn into before it is scaled down."""
COMMENT = "flowlora-workflow-sha256:"
SETTINGS = {"Comfy.Graph.CanvasInfo": False, "Comfy.Graph.CanvasMenu": False}
"""Hide the canvas's statistics and zoom buttons, which would sit in the picture's corners."""


def source_hash(thumbnail: Path) -> str | None:
    """SHA-256 of the workflow JSON a thumbnail was made from (its JPEG comment), or None."""
    from PIL import Image

    with Image.open(thumbnail) as image:
        comment = image.info.get("comment", b"")
    text = comment.decode("ascii", "replace") if isinstance(comment, bytes) else str(comment)
    return text[len(COMMENT):] if text.startswith(COMMENT) else None


def render(frontend, workflow_path: Path, target: Path) -> None:
    """Load one workflow in the page, draw it into the square and save the JPEG with its source hash."""
    from PIL import Image

    data = workflow_path.read_bytes()
    frontend.load_workflow(json.loads(data), workflow_path.name)
    frontend.close_dialogs()
    left, top = 80, 110
    frontend.fit_view(None, into=(left, top, left + SQUARE, top + SQUARE), max_scale=1.0, cover=True)
    frontend.page.wait_for_timeout(300)
    png = frontend.page.screenshot(clip={"x": left, "y": top, "width": SQUARE, "height": SQUARE})
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    comment = (COMMENT + hashlib.sha256(data).hexdigest()).encode("ascii")
    image.save(target, "JPEG", quality=85, optimize=True, comment=comment)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write workflows/<name>.jpg, the Templates browser's thumbnails.")
    parser.add_argument("--url", help="a running ComfyUI with the pack and scripts/flowlora_tiny installed (default: start one)")
    parser.add_argument("names", nargs="*", help="workflow names (default: all of workflows/*.json)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    import browser
    import harness

    reason = browser.skip_reason()
    if reason:
        raise SystemExit(f"cannot draw thumbnails: {reason}")
    paths = [WORKFLOWS / f"{n}.json" for n in args.names] if args.names else sorted(WORKFLOWS.glob("*.json"))
    with ExitStack() as stack:
        url = args.url
        if not url:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowlora-thumbs-")))
            (base / "custom_nodes").mkdir()
            (base / "custom_nodes" / "flowlora_tiny").symlink_to(REPO / "scripts" / "flowlora_tiny", target_is_directory=True)
            url = stack.enter_context(harness.comfy_server(base)).url
        viewport = {"width": 80 + SQUARE + 20, "height": 110 + SQUARE + 40}
        frontend = stack.enter_context(browser.Frontend(url, timeout_s=600, viewport=viewport))
        for setting, value in SETTINGS.items():
            frontend.set_setting(setting, value)
        for path in paths:
            target = path.with_suffix(".jpg")
            render(frontend, path, target)
            print(f"wrote {target.relative_to(REPO)} ({target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

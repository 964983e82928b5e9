"""Four things a user does in ComfyUI's own frontend, checked there (headless Chromium, the real server).

* **Previews while it trains** (issue 14 item 6): a LoRA run on the committed
  tiny-world Turbo with a Training Preview (3 prompts, every 4 updates) is queued
  with the frontend's Run button. Two previews, sent by the trainer through ComfyUI's
  progress bar, must arrive for the trainer node from that prompt while the server
  still runs it (no end event yet, the prompt in ``/queue``'s running list), the
  frontend must hold the latest for the node (``app.nodePreviewImages``) and the
  canvas must have loaded one as the node's image (``node.imgs``, a blob: URL). The
  frontend's cancel button then stops the run (``execution_interrupted``).
* **Node help pages** (issue 16 item 2): selecting a node and pressing the selection
  toolbox's info button shows the pack's ``web/docs/<NodeId>.md``, and the Chinese
  ``web/docs/<NodeId>/zh.md`` with the frontend's language set to Chinese.
* **Nodes that show only what matters** (issue 16 item 6): in the AC-RF workflow each timestep and
  loss node shows exactly its declared widgets (at most six), where the deprecated all-in-one
  Timestep Sampler, loaded from a workflow saved before the split, shows 21; the node search
  (double-click on the canvas, type "Timestep") offers the new nodes and not the deprecated one.
  Its recipe screenshot is ``docs/screenshots/timestep_and_loss_nodes.png``.
* **Template browser** (issue 16 item 5): the frontend's Templates browser lists the
  pack's ``workflows/*.json`` under its folder name, each card showing its own
  ``workflows/<name>.jpg`` (fetched with status 200, 512 x 512, not the stock
  picture), and clicking a card opens that workflow (same node types and count).
  Without a browser: every workflow has a thumbnail made from its current JSON
  (``scripts/workflow_thumbnails.py``).

Screenshots go to ``test-artifacts/browser/<what>-frontend-<version>.png``. Skips, with the reason, where
Chromium or Playwright is missing (``browser.skip_reason``).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

import browser
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
ARTIFACTS = REPO / "test-artifacts" / "browser"
SCRIPTS = REPO / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import workflow_thumbnails  # noqa: E402

_skip = browser.skip_reason()
TIMEOUT_S = 900.0
"""Start-up and waits: generous, since the suite may share two CPU cores with other work."""
PREVIEW_STEPS = 5000
"""Far more than the test waits for: it cancels the run after the second preview, at any machine speed."""
PREVIEW_EVERY = 4


@pytest.fixture(scope="module")
def env(request):
    """``(server, frontend)`` with the tiny-world Turbo, text encoder and mosaic style set installed in the server."""
    if _skip:
        pytest.skip(_skip)
    server = request.getfixturevalue("server")
    from tinyworld import assets

    assets.install(server.base, styles=("mosaic",), u1=False)  # before the page reads /object_info
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser.Frontend(server.url, timeout_s=TIMEOUT_S) as fe:
        yield server, fe


def training_graph(object_info: dict, steps: int = PREVIEW_STEPS, every: int = PREVIEW_EVERY) -> dict:
    """The smallest training graph with previews: tiny-world Turbo, the mosaic style set, the AC-RF
    recipe, a Training Preview (3 held-out prompts, 8 steps, cfg 1, 64 x 64, every ``every`` updates)
    and the trainer's preview grid in a Preview Image node."""
    import build_workflows as bw
    from tinyworld import assets

    wf = bw.Workflow("browser_previews")
    unet = wf.add("UNETLoader", (0, 0), node_title="tiny Z-Image Turbo (tiny world)", unet_name=assets.ZIMAGE_FILES["turbo"], weight_dtype="default")
    clip = wf.add("FlowLoRATinyTextEncoderLoader", (0, 160), clip_name=assets.TEXT_ENCODER, type="lumina2")
    vae = wf.add("VAELoader", (0, 320), vae_name="pixel_space")
    folder = assets.STYLE_FOLDER.format(style="mosaic")
    dataset = wf.add("FlowLoRADataset", (400, 0), folder=folder, vae=vae["VAE"], clip=clip["CLIP"], trigger="", bucket_mode="auto",
                     max_pixels=64 * 64, bucket_step=16, crop="center", seed=0)
    recipe = bw.acrf_recipe(wf, 0, 1200)
    recipe["lora"].values.update(rank=8, alpha=8.0)
    recipe["lora"].title = "LoRA r8 / a8 on to_q, to_k, to_v, to_out"
    recipe["optimizer"].values.update(optimizer="adamw", learning_rate=1e-3, grad_accumulation=1)
    recipe["optimizer"].title = "AdamW 1e-3 (tiny model), cosine w/ restarts"
    shifted = wf.add("ModelSamplingAuraFlow", (0, 480), node_title="sampling: shift 3", model=unet["MODEL"], shift=3.0)
    prompts = [wf.add("CLIPTextEncode", (800, 200 * i), node_title=f"preview prompt {i}", size=(340, 160), text=text, clip=clip["CLIP"])
               for i, text in enumerate(bw.tinyworld_prompts()[:3])]
    both = wf.add("ConditioningCombine", (800, 600), conditioning_1=prompts[0]["CONDITIONING"], conditioning_2=prompts[1]["CONDITIONING"])
    three = wf.add("ConditioningCombine", (800, 700), conditioning_1=both["CONDITIONING"], conditioning_2=prompts[2]["CONDITIONING"])
    preview = wf.add("FlowLoRATrainingPreview", (800, 820), positive=three["CONDITIONING"], vae=vae["VAE"], sampler_name="euler", scheduler="simple",
                     steps=8, cfg=1.0, seed=7, width=64, height=64, every_n_steps=every)
    trainer = wf.add("FlowLoRALoraTrainer", (1200, 0), node_title=f"LoRA Trainer: {steps} updates, preview every {every}", size=(380, 900),
                     model=unet["MODEL"], apply_to=shifted["MODEL"], dataset=dataset["dataset"], preview=preview["preview"],
                     timesteps=recipe["timesteps"]["timesteps"], loss=recipe["loss"]["loss"], lora=recipe["lora"]["lora"], optimizer=recipe["optimizer"]["optimizer"],
                     steps=steps, epochs=0, batch_size=2, seed=0, training_dtype="fp32", gradient_checkpointing=False, save_every=0,
                     output_name="flowlora_browser/mosaic", resume=False, overwrite=True)
    wf.add("PreviewImage", (1620, 0), node_title="preview grid (at the end)", size=(360, 360), images=trainer["previews"])
    return wf.build(object_info)


def _artifact(fe: browser.Frontend, stem: str, suffix: str) -> Path:
    """``test-artifacts/browser/<stem>-frontend-<version>.<suffix>``: one per host's frontend."""
    return ARTIFACTS / f"{stem}-frontend-{fe.version}.{suffix}"


def _margin(box: dict, pixels: float) -> dict:
    return {"x": max(0, box["x"] - pixels), "y": max(0, box["y"] - pixels), "width": box["width"] + 2 * pixels, "height": box["height"] + 2 * pixels}


def _node_id(workflow: dict, node_type: str) -> int:
    return next(n["id"] for n in workflow["nodes"] if n["type"] == node_type)


# ---------------------------------------------------------------- 1. previews while it trains

WATCH_JS = """
() => {
  const api = app.api;
  const w = window.__flowloraWatch = {events: [], previews: []};
  for (const t of ['execution_start', 'execution_success', 'execution_error', 'execution_interrupted'])
    api.addEventListener(t, e => w.events.push({type: t, prompt: e.detail && e.detail.prompt_id, at: performance.now()}));
  api.addEventListener('b_preview_with_metadata', e => w.previews.push({
    node: String(e.detail.displayNodeId), prompt: e.detail.promptId || e.detail.jobId, bytes: e.detail.blob.size, at: performance.now()}));
}
"""

# What the trainer node shows now: the frontend's preview store for it, and the image the canvas draws.
NODE_PREVIEW_JS = """
(id) => {
  const node = app.graph.getNodeById(id);
  const urls = (app.nodePreviewImages || {})[String(id)] || [];
  const imgs = (node.imgs || []).map(i => ({src: i.src, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete}));
  const w = window.__flowloraWatch;
  return {urls: [...urls], imgs, previews: w.previews.filter(p => p.node === String(id)),
          ended: w.events.filter(e => e.type !== 'execution_start'), started: w.events.filter(e => e.type === 'execution_start')};
}
"""


def _wait(page, predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(poll_s * 1000)


@pytest.mark.server
@pytest.mark.slow
def test_previews_appear_on_the_trainer_node_while_it_trains(env):
    server, fe = env
    page = fe.page
    workflow = training_graph(server.get("/object_info", timeout=300))
    trainer, preview = _node_id(workflow, "FlowLoRALoraTrainer"), _node_id(workflow, "FlowLoRATrainingPreview")
    report = fe.load_workflow(workflow, "browser_previews.json")
    assert not report.problems(), "\n".join(report.problems())
    page.evaluate(WATCH_JS)
    state = lambda: page.evaluate(NODE_PREVIEW_JS, trainer)  # noqa: E731

    def second_preview_shown():
        s = state()
        assert not s["ended"], f"the run ended before two previews reached the trainer node: {s['ended']}\n{server.log_text()[-3000:]}"
        # shown: the frontend holds the latest preview for the node, and the canvas has loaded a preview (a blob:
        # URL; the node has no other image before it finishes) as the node's image
        if len(s["previews"]) >= 2 and s["urls"] and any(i["src"].startswith("blob:") and i["complete"] and i["w"] > 0 for i in s["imgs"]):
            return s
        return None

    fe.click_run()
    try:
        s = _wait(page, second_preview_shown, TIMEOUT_S, "two previews on the trainer node")
        running = server.get("/queue")["queue_running"]
        shot = _artifact(fe, "trainer_preview_mid_run", "png")
        box = fe.fit_view([trainer, preview], max_scale=1.2)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
        page.screenshot(path=str(_artifact(fe, "trainer_preview_mid_run_nodes", "png")), clip=_margin(box, 24))
        _artifact(fe, "trainer_preview_mid_run", "json").write_text(json.dumps(s, indent=2))

        assert running, "the prompt is no longer running on the server"
        assert {p["prompt"] for p in s["previews"]} == {running[0][1]}, (s["previews"], running[0][1])
        assert all(p["bytes"] > 100 for p in s["previews"]), s["previews"]

        fe.click_cancel()
        ended = _wait(page, lambda: state()["ended"], TIMEOUT_S, "the run to stop after cancel")
        assert ended[0]["type"] == "execution_interrupted", ended
    finally:
        if server.get("/queue")["queue_running"]:
            server.post("/interrupt", {})
        _wait(page, lambda: not server.get("/queue")["queue_running"], TIMEOUT_S, "the server queue to empty")


# ---------------------------------------------------------------- 2. node help pages


@pytest.mark.server
def test_node_help_page_opens_from_the_selection_toolbox(env):
    server, fe = env
    page = fe.page
    workflow = training_graph(server.get("/object_info", timeout=300))
    trainer = _node_id(workflow, "FlowLoRALoraTrainer")
    fe.load_workflow(workflow, "browser_help.json")
    english = (REPO / "web" / "docs" / "FlowLoRALoraTrainer.md").read_text(encoding="utf-8")
    chinese = (REPO / "web" / "docs" / "FlowLoRALoraTrainer" / "zh.md").read_text(encoding="utf-8")

    text = fe.open_node_help(trainer)
    assert _first_paragraph(english) in _squash(text), text[:800]
    page.screenshot(path=str(_artifact(fe, "node_help_en", "png")))

    fe.set_setting("Comfy.Locale", "zh")
    try:
        text = fe.open_node_help(trainer)
        assert _first_paragraph(chinese) in _squash(text), text[:800]
        page.screenshot(path=str(_artifact(fe, "node_help_zh", "png")))
    finally:
        fe.set_setting("Comfy.Locale", "en")
        fe.close_node_help()


def test_a_page_promise_that_never_settles_ends_at_the_timeout(env):
    """``Frontend.settle`` returns a page function's value once its promise settles, and gives up on one that
    never does at the page timeout instead of waiting for ever (``page.evaluate`` has no timeout)."""
    _, fe = env
    saved, fe.timeout_ms = fe.timeout_ms, 500
    try:
        started = time.monotonic()
        assert fe.settle("() => new Promise(() => {})") == (False, None)
        assert 0.4 < time.monotonic() - started < 30
        assert fe.settle("(x) => Promise.resolve(x + 1)", 1) == (True, 2)
    finally:
        fe.timeout_ms = saved


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _first_paragraph(markdown: str) -> str:
    """The first body paragraph as rendered text (markdown emphasis and code marks dropped)."""
    body = next(p for p in markdown.split("\n\n") if p.strip() and not p.lstrip().startswith("#"))
    return _squash(re.sub(r"[*`]", "", body))


# ---------------------------------------------------------------- 3. template browser


@pytest.mark.server
def test_template_browser_lists_the_workflows_with_thumbnails_and_opens_one(env):
    server, fe = env
    page = fe.page
    listed = server.get("/workflow_templates")
    pack = next((k for k, v in listed.items() if "demo_tinyworld" in v), None)
    assert pack, f"the server lists no template folder with the pack's workflows: {listed}"
    assert sorted(listed[pack]) == sorted(p.stem for p in WORKFLOWS.glob("*.json")), listed[pack]

    cards, responses = fe.open_templates(pack)
    assert sorted(c["name"] for c in cards) == sorted(listed[pack]), cards
    # each card asked for its <name>.jpg, got it, and shows it (not the stock picture it falls back to)
    size = workflow_thumbnails.SIZE
    wrong = [c for c in cards if responses.get(f"/api/workflow_templates/{pack}/{c['name']}.jpg") != 200
             or "default-template" in c["src"] or not c["loaded"] or (c["width"], c["height"]) != (size, size)]
    assert not wrong, f"cards without their own thumbnail: {wrong}; thumbnail requests: {responses}"
    page.screenshot(path=str(_artifact(fe, "template_browser", "png")))

    name = "demo_tinyworld"
    expected = {n["type"] for n in json.loads((WORKFLOWS / f"{name}.json").read_text())["nodes"]}
    loaded = fe.open_template_card(name)
    assert loaded["types"] == expected, (sorted(expected - loaded["types"]), sorted(loaded["types"] - expected))
    assert loaded["nodes"] == len(json.loads((WORKFLOWS / f"{name}.json").read_text())["nodes"])
    assert loaded["name"] in (None, f"{name}.json", name), loaded["name"]  # the workflow's tab, where the frontend names it
    page.screenshot(path=str(_artifact(fe, "template_opened", "png")))


def test_every_workflow_has_a_current_thumbnail():
    """No browser: workflows/<name>.jpg exists beside each workflow and was made from its current JSON."""
    stale = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        thumb = path.with_suffix(".jpg")
        if not thumb.is_file():
            stale.append(f"{thumb.name} is missing")
            continue
        made_from = workflow_thumbnails.source_hash(thumb)
        if made_from != hashlib.sha256(path.read_bytes()).hexdigest():
            stale.append(f"{thumb.name} was made from another version of {path.name}")
    assert not stale, "; ".join(stale) + f" (run {workflow_thumbnails.COMMAND})"


# ---------------------------------------------------------------- 4. nodes that show only what matters

NODE_WIDGETS_JS = """
(types) => app.graph.nodes.filter(n => types.includes(n.type)).map(n => ({id: n.id, type: n.type, widgets: (n.widgets || []).map(w => w.name)}))
"""

SEARCH_JS = """
() => [...document.querySelectorAll('[role="option"]')].map(o => o.innerText.replace(/\\s+/g, ' ').trim()).filter(t => t)
"""


FREE_CANVAS_POINT_JS = """
(points) => points.find(([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.tagName === 'CANVAS' }) || null
"""


def _open_node_search(fe: browser.Frontend, attempts: int = 3) -> None:
    """Open the node search as a user does, with a double-click on an empty part of the canvas: the whole
    graph fitted into the upper part of the page, the click on a point of the lower part where nothing
    (a panel, an overlay, a toast) covers the canvas; again if the search input did not take the focus."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page, width, height = fe.page, fe.viewport["width"], fe.viewport["height"]
    candidates = [[width * fx, height * fy] for fy in (0.8, 0.7, 0.9, 0.6) for fx in (0.5, 0.35, 0.65, 0.2, 0.8)]
    for _ in range(attempts):
        fe.close_dialogs()
        page.evaluate("() => document.querySelectorAll('.p-toast-message').forEach(t => t.remove())")
        fe.fit_view(into=(80, 110, width - 20, height * 0.45), max_scale=0.5)
        page.wait_for_timeout(300)
        point = page.evaluate(FREE_CANVAS_POINT_JS, candidates)
        assert point, "no point of the lower page shows the bare canvas"
        page.mouse.dblclick(*point)
        try:
            page.wait_for_function("() => document.activeElement && document.activeElement.tagName === 'INPUT'", timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the node search did not open after {attempts} double-clicks on the canvas")


@pytest.mark.server
def test_timestep_and_loss_nodes_show_only_their_own_widgets_and_the_old_ones_are_hidden_from_search(env):
    """Issue 16 item 6, in the frontend: the AC-RF workflow's timestep and loss nodes show exactly their own
    widgets (as /object_info declares them, a handful each, where the all-in-one Timestep Sampler showed 21);
    the node search finds the new nodes and not the deprecated all-in-one ones, which still load from a saved
    workflow. Screenshot of the recipe for the README."""
    server, fe = env
    page = fe.page
    info = server.get("/object_info", timeout=300)
    workflow = json.loads((WORKFLOWS / "acrf_zimage_turbo.json").read_text(encoding="utf-8"))
    families = [t for t in info if t.startswith(("FlowLoRATimestep", "FlowLoRALoss")) and not info[t].get("deprecated")]
    fe.load_workflow(workflow, "acrf_zimage_turbo.json")

    shown = page.evaluate(NODE_WIDGETS_JS, families)
    assert {n["type"] for n in shown} >= {"FlowLoRATimestepsAnchorCoupled", "FlowLoRATimestepHistogram", "FlowLoRALossCharbonnier", "FlowLoRALossCosine", "FlowLoRALossFFT", "FlowLoRALossMinSNR"}
    for node in shown:
        spec = info[node["type"]]["input"]
        declared = [name for section in ("required", "optional") for name, (kind, *_) in spec.get(section, {}).items()
                    if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        widgets = [w for w in node["widgets"] if w != "control_after_generate"]  # the frontend's companion of a seed
        assert widgets == declared and len(declared) <= 6, node

    legacy = fe.load_workflow(json.loads((REPO / "tests" / "legacy_workflows" / "demo_tiny.json").read_text(encoding="utf-8")), "legacy_demo_tiny.json")
    assert not legacy.problems(), legacy.problems()
    (old,) = page.evaluate(NODE_WIDGETS_JS, ["FlowLoRATimestepSampler"])
    assert len(old["widgets"]) == 21, old

    fe.load_workflow(workflow, "acrf_zimage_turbo.json")
    recipe = [n["id"] for n in workflow["nodes"] if n["type"] in families or (n["type"] == "PreviewImage" and n.get("title") == "timestep histogram")]
    box = fe.fit_view(recipe, max_scale=1.2)
    page.screenshot(path=str(_artifact(fe, "timestep_and_loss_nodes", "png")), clip=_margin(box, 24))

    _open_node_search(fe)
    page.keyboard.type("Timestep", delay=30)
    _wait(page, lambda: any("Timesteps:" in t for t in page.evaluate(SEARCH_JS)), 30, "the pack's nodes among the search results")
    page.wait_for_timeout(500)  # the list settles
    found = [t for t in page.evaluate(SEARCH_JS) if "Timestep" in t]
    page.screenshot(path=str(_artifact(fe, "node_search_timestep", "png")))
    page.keyboard.press("Escape")
    assert any("Timesteps: Uniform" in t for t in found) and any("Timestep Shift" in t for t in found), found
    assert not any("Timestep Sampler" in t for t in found), f"the deprecated all-in-one node is offered: {found}"

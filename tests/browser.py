"""ComfyUI's own frontend in headless Chromium, for checking workflows as a user opens them.

The host serves the frontend from ``comfyui-frontend-package``; :class:`Frontend`
opens it in Debian's Chromium through Playwright (its driver ships inside the
PyPI wheel; no browser download), waits for ``window.app`` with the pack's
node definitions registered, and loads a workflow with ``app.loadGraphData``
exactly as dropping the file on the canvas does. :meth:`Frontend.load_workflow`
then reports, from inside the page:

* node types that ``LiteGraph.registered_node_types`` lacks, both in the JSON
  and in the loaded graph, and the types the frontend told the user about: its
  "missing nodes" dialog (frontend 1.32, ComfyUI 0.3.x) or its error overlay and
  Errors panel (frontend 1.49, ComfyUI 0.33);
* nodes the frontend flags with ``has_errors`` for any reason other than a
  missing model file. Model files a workflow names but the server lacks (every
  fresh install) are information, listed by :meth:`WorkflowReport.info`: 1.49
  flags such loaders with ``has_errors`` and counts them in its error overlay,
  1.32 does neither. What a frontend has is detected (a method, a Pinia store, a
  ``data-testid``), never inferred from its version;
* links that do not join existing nodes and slots, that the two ends do not
  both reference, or whose types do not connect (``LiteGraph.isValidConnection``);
* nodes or links that the frontend dropped while loading;
* console errors, uncaught page errors, and dialogs left open.

:func:`check_workflow_json` checks the same link facts on the file itself, so a
report names the file's own node ids, slots and link ids.

Besides loading, :class:`Frontend` does what a user does with the mouse where a test
needs it: Run and Cancel in the action bar, the selection toolbox's info button (the
node's help page), the Templates browser and its cards; :meth:`Frontend.fit_view` frames
nodes for a screenshot (``tests/test_browser_ui.py``, ``scripts/workflow_thumbnails.py``).

:func:`skip_reason` says why the browser cannot run here (Playwright not
installed, no Chromium); ``scripts/host.sh`` installs both where it can.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# From the machine notes: headless as root, with no network beyond loopback.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The frontend asks api.comfy.org for release notes and node-registry data;
    # answer every non-loopback name at once instead of waiting on DNS.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
)
VIEWPORT = {"width": 2400, "height": 1350}  # a whole training graph at a zoom where titles still read

# Settings the frontend would otherwise greet a new user with (templates browser
# on first start). Written to the server's user settings before the page loads.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,  # the models are not on a test host
    "Comfy.Workflow.ShowMissingNodesWarning": True,  # 1.32's dialog; 1.49 has the Errors panel instead
    "Comfy.Minimap.Visible": False,  # it would cover a corner of the screenshots
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # draw titles and widgets at any zoom, not grey boxes
    "Comfy.Locale": "en",  # buttons are found by their English names (a test may switch to another language)
}

# Console errors that the stock frontend prints on every start of a fresh,
# offline host, whatever the workflow: optional user files that do not exist
# (user.css, comfy.templates.json, the workflows folder), the favicon, and
# api.comfy.org which this machine cannot reach.
BENIGN_RESOURCE_ERROR = "Failed to load resource"
# The 1.32 settings store calls onChange on a setting it has no definition for
# during start-up ("Cannot read properties of undefined (reading 'id')" at
# onChange <- useSettingStore.set); it happens on an empty host too.
# Frontend 1.49 (ComfyUI 0.33): the app-mode store's event listener reads
# app.rootGraph before the graph exists (useEventListener(() => app.rootGraph?.events,
# 'configured', ...) in stores/appModeStore), and the rootGraph getter logs
# "ComfyApp graph accessed before initialization"; a host with an empty
# custom_nodes folder prints it too. It is one string argument, with no stack.
BENIGN_STARTUP_STACKS = (
    ("Cannot read properties of undefined (reading 'id')", "at onChange"),
    ("ComfyApp graph accessed before initialization",),
)

INIT_SCRIPT = """
localStorage.setItem('vueNodesBannerDismissed', 'true');
(() => {
  const original = console.error;
  console.error = (...args) => {
    original(...args.map(a => (a && a.stack) ? String(a.stack) : a));
  };
})();
"""

READY_JS = """
(packType) => !!(window.app && window.app.graph && window.app.canvas && window.app.vueAppReady
  && window.LiteGraph && window.LiteGraph.registered_node_types
  && (packType in window.LiteGraph.registered_node_types)
  && window.app.graph.nodes.length > 0)
"""

# Loads one workflow and inspects the graph the frontend built from it.
LOAD_AND_CHECK_JS = r"""
async ({workflow, name}) => {
  const app = window.app, LG = window.LiteGraph;
  const registered = LG.registered_node_types;
  const result = {missing_types: [], missing_in_graph: [], missing_dialog: null, link_problems: [],
                  load_error: null, nodes_in_graph: 0, links_in_graph: 0, graphs: []};
  const jsonNodes = [...(workflow.nodes || [])];
  for (const sg of (workflow.definitions && workflow.definitions.subgraphs) || []) jsonNodes.push(...(sg.nodes || []));
  for (const n of jsonNodes) {
    if (!(n.type in registered)) result.missing_types.push({id: n.id, type: n.type});
  }

  // Frontend 1.32 passes the missing types to app.showMissingNodesError, which opens
  // the missing-nodes dialog; 1.49's loadGraphData no longer calls it (see STATE_JS).
  const originalMissing = app.showMissingNodesError;
  if (typeof originalMissing === 'function') {
    app.showMissingNodesError = function (types, ...rest) {
      result.missing_dialog = types.map(t => typeof t === 'string' ? t : t.type);
      return originalMissing.call(this, types, ...rest);
    };
  }
  try {
    // The 5th argument is 1.32's; 1.49 ignores an option it does not know.
    await app.loadGraphData(workflow, true, false, name, {showMissingModelsDialog: false});
  } catch (e) {
    result.load_error = String(e && e.stack || e);
  } finally {
    if (typeof originalMissing === 'function') app.showMissingNodesError = originalMissing;
  }

  const graphs = [[app.graph, 'root']];
  if (app.graph.subgraphs) for (const [id, sg] of app.graph.subgraphs) graphs.push([sg, 'subgraph ' + (sg.name || id)]);
  const typeOk = (a, b) => a === b || LG.isValidConnection(a, b);
  for (const [g, where] of graphs) {
    const problem = (text) => result.link_problems.push(where + ': ' + text);
    const links = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
    const live = links.filter(l => l);
    result.graphs.push({where, nodes: g.nodes.length, links: live.length});
    result.nodes_in_graph += g.nodes.length;
    result.links_in_graph += live.length;
    for (const n of g.nodes) {
      if (!(n.type in registered)) result.missing_in_graph.push({id: n.id, type: n.type, where});
    }
    const isIO = (id) => where !== 'root' && id < 0;   // a subgraph's own input/output node
    for (const l of live) {
      const tag = `link ${l.id} (${l.origin_id}:${l.origin_slot} -> ${l.target_id}:${l.target_slot}, ${l.type})`;
      const o = isIO(l.origin_id) ? null : g.getNodeById(l.origin_id);
      const t = isIO(l.target_id) ? null : g.getNodeById(l.target_id);
      if (!isIO(l.origin_id) && !o) { problem(`${tag}: origin node ${l.origin_id} does not exist`); continue; }
      if (!isIO(l.target_id) && !t) { problem(`${tag}: target node ${l.target_id} does not exist`); continue; }
      let outType = null, inType = null;
      if (o) {
        const out = (o.outputs || [])[l.origin_slot];
        if (!out) { problem(`${tag}: ${o.type} #${o.id} has no output slot ${l.origin_slot}`); continue; }
        outType = out.type;
        if (!(out.links || []).includes(l.id)) problem(`${tag}: output '${out.name}' of ${o.type} #${o.id} does not list the link`);
      }
      if (t) {
        const inp = (t.inputs || [])[l.target_slot];
        if (!inp) { problem(`${tag}: ${t.type} #${t.id} has no input slot ${l.target_slot}`); continue; }
        inType = inp.type;
        if (inp.link !== l.id) problem(`${tag}: input '${inp.name}' of ${t.type} #${t.id} holds link ${inp.link}, not this one`);
      }
      if (outType !== null && inType !== null && !typeOk(outType, inType))
        problem(`${tag}: output type ${outType} of ${o.type} #${o.id} does not connect to input '${t.inputs[l.target_slot].name}' (${inType}) of ${t.type} #${t.id}`);
      if (inType !== null && l.type != null && !typeOk(l.type, inType))
        problem(`${tag}: link type ${l.type} does not connect to input '${t.inputs[l.target_slot].name}' (${inType}) of ${t.type} #${t.id}`);
    }
    const byId = new Map(live.map(l => [l.id, l]));
    for (const n of g.nodes) {
      (n.inputs || []).forEach((inp, slot) => {
        if (inp.link == null) return;
        const l = byId.get(inp.link);
        if (!l) problem(`${n.type} #${n.id} input '${inp.name}' refers to link ${inp.link}, which does not exist`);
        else if (l.target_id !== n.id || l.target_slot !== slot) problem(`${n.type} #${n.id} input '${inp.name}' refers to link ${inp.link}, which ends at ${l.target_id}:${l.target_slot}`);
      });
      (n.outputs || []).forEach((out, slot) => {
        for (const id of out.links || []) {
          const l = byId.get(id);
          if (!l) problem(`${n.type} #${n.id} output '${out.name}' lists link ${id}, which does not exist`);
          else if (l.origin_id !== n.id || l.origin_slot !== slot) problem(`${n.type} #${n.id} output '${out.name}' lists link ${id}, which starts at ${l.origin_id}:${l.origin_slot}`);
        }
      });
    }
  }

  // Show the whole graph (nodes and groups) for the screenshot.
  // From pos/size: boundingRect is only filled in by the first draw.
  const title = LG.NODE_TITLE_HEIGHT || 30;
  const rects = app.graph.nodes.map(n => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title])
    .concat((app.graph.groups || []).map(g => [g.pos[0], g.pos[1], g.size[0], g.size[1]]));
  if (rects.length) {
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const r of rects) { x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]); x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]); }
    y0 -= 60;  // room for the group titles under the floating run bar
    app.canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom: 0.92});
  }
  app.graph.setDirtyCanvas(true, true);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return result;
}
"""

# The frontend's Pinia stores, where the app has them (1.49 keeps missing nodes,
# missing model files and the error overlay's count there). Feature-detected:
# ``store(id)`` is null on a frontend without that store.
PINIA_JS = """
  const pinia = (() => {
    for (const el of [document.getElementById('vue-app'), ...document.querySelectorAll('[data-v-app]')]) {
      const p = el && el.__vue_app__ && el.__vue_app__.config.globalProperties.$pinia;
      if (p && p._s) return p;
    }
    return null;
  })();
  const store = (id) => (pinia && pinia._s.get(id)) || null;
"""

# What the frontend flagged once the load has settled (watchers run after a render):
# nodes with has_errors, missing model files, missing node types, the error overlay.
#
# A node's has_errors means different things: 1.32 sets it only on placeholders for
# unregistered types; 1.49 clears it there and sets it (useNodeErrorFlagSync) on every
# node that the missing-model store lists, i.e. a loader whose combo names a file the
# server does not have, as on any fresh install. Such a node is reported as a missing
# model file (information), any other flagged node as a problem. Missing files come from
# the 'missingModel' store where it exists, and on every frontend from combo widgets whose
# value is a file name that the server's option list lacks.
STATE_JS = r"""
() => {
  const app = window.app, LG = window.LiteGraph;
""" + PINIA_JS + r"""
  const FILE = /\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx|pkl)$/i;
  const out = {flagged: [], unlisted_combos: [], missing_models: [], missing_nodes_store: null,
               error_counts: null, other_errors: [], overlay: null};

  const mm = store('missingModel');
  const candidates = (mm && mm.missingModelCandidates) || [];
  for (const c of candidates) {
    out.missing_models.push({node: String(c.nodeId), type: c.nodeType || '', widget: c.widgetName || '',
                             name: c.name, directory: c.directory || null, source: 'missingModel store'});
  }
  const graphs = [[app.graph, 'root']];
  if (app.graph.subgraphs) for (const [id, sg] of app.graph.subgraphs) graphs.push([sg, 'subgraph ' + (sg.name || id)]);
  for (const [g, where] of graphs) {
    for (const n of g.nodes) {
      const fileMissing = [];
      for (const w of n.widgets || []) {
        const values = w.options && w.options.values;
        if (w.type !== 'combo' || !Array.isArray(values) || w.value == null || values.includes(w.value)) continue;
        out.unlisted_combos.push({node: String(n.id), where, type: n.type, widget: w.name, value: w.value, options: values.length});
        if (typeof w.value === 'string' && FILE.test(w.value)) {
          fileMissing.push(w.name);
          const known = out.missing_models.some(m => m.widget === w.name && m.name === w.value
                                                     && (m.node === String(n.id) || m.node.endsWith(':' + n.id)));
          if (!known) out.missing_models.push({node: String(n.id), type: n.type, widget: w.name, name: w.value,
                                               directory: null, source: 'combo value not offered'});
        }
      }
      if (!n.has_errors) continue;
      const id = String(n.id);
      const byStore = candidates.some(c => {
        const cid = String(c.nodeId);
        // root: the node itself, or a subgraph container holding it; a definition: the last id segment
        return where === 'root' ? (cid === id || cid.startsWith(id + ':')) : cid.split(':').pop() === id;
      });
      out.flagged.push({id: n.id, where, type: n.type, registered: n.type in LG.registered_node_types,
                        missing_model: byStore || fileMissing.length > 0});
    }
  }

  const mn = store('missingNodesError');
  if (mn) {
    const err = mn.missingNodesError;
    out.missing_nodes_store = err ? (err.nodeTypes || []).map(t => typeof t === 'string' ? t : t.type) : [];
  }
  const ee = store('executionError');
  if (ee && typeof ee.totalErrorCount === 'number') {
    const models = mm ? (mm.missingModelCount || 0) : 0;
    const nodes = mn ? (mn.missingNodeCount || 0) : 0;
    out.error_counts = {total: ee.totalErrorCount, missing_models: models, missing_nodes: nodes};
    const media = store('missingMedia');
    if (media && media.missingMediaCandidates && media.missingMediaCandidates.length)
      out.other_errors.push('missing media: ' + JSON.stringify(media.missingMediaCandidates).slice(0, 600));
    for (const k of ['lastNodeErrors', 'lastExecutionError', 'lastPromptError'])
      if (ee[k] && Object.keys(ee[k]).length) out.other_errors.push(k + ': ' + JSON.stringify(ee[k]).slice(0, 600));
  }
  const overlay = document.querySelector('[data-testid="error-overlay"]');
  if (overlay && overlay.getBoundingClientRect().width > 0) out.overlay = overlay.innerText.trim().replace(/\s+/g, ' ').slice(0, 400);
  return out;
}
"""

# Frontend 1.49 shows no missing-nodes dialog: loadGraphData puts the types in the
# 'missingNodesError' store and opens an error overlay ("N errors found ... View
# details"); "View details" opens the right side panel's Errors tab, whose "Missing
# Node Packs" group lists the types. The checker clicks it, as a user would, and reads
# that group.
OPEN_ERRORS_PANEL_JS = """
async () => {
  const button = document.querySelector('[data-testid="error-overlay-see-errors"]');
  if (!button) return null;
  button.click();
  for (let i = 0; i < 50; i++) {
    const group = document.querySelector('[data-testid="error-group-missing-node"]');
    if (group && group.innerText.trim()) return group.innerText.trim().replace(/\\s+/g, ' ').slice(0, 1000);
    await new Promise(r => setTimeout(r, 100));
  }
  return '';
}
"""

# Before the next load: close 1.49's Errors panel and overlay (no-ops on 1.32).
RESET_PANELS_JS = """
() => {
""" + PINIA_JS + """
  const panel = store('rightSidePanel');
  if (panel && panel.isOpen && typeof panel.closePanel === 'function') panel.closePanel();
  const ee = store('executionError');
  if (ee && typeof ee.dismissErrorOverlay === 'function') ee.dismissErrorOverlay();
}
"""

OPEN_DIALOGS_JS = """
() => [...document.querySelectorAll('[role="dialog"], [role="alertdialog"]')]
  .filter(d => d.offsetParent !== null || getComputedStyle(d).position === 'fixed')
  .filter(d => d.getBoundingClientRect().width > 0)
  .map(d => d.innerText.trim().replace(/\\s+/g, ' ').slice(0, 400))
"""

TOASTS_JS = """
() => [...document.querySelectorAll('.p-toast-message')]
  .map(t => ({severity: [...t.classList].find(c => c.startsWith('p-toast-message-') && c !== 'p-toast-message-content') || '',
              text: t.innerText.trim().replace(/\\s+/g, ' ').slice(0, 400)}))
"""


# Puts graph bounds (the given nodes, or every node and group) into the page rectangle
# ``into`` = [left, top, right, bottom] (CSS pixels), at most ``maxScale``, by setting the
# canvas's DragAndScale (screen = (graph + offset) * scale, from the canvas's corner).
# ``cover`` false: all of it, centred; true: at the geometric mean of the scales that fit its
# width and its height, so that a long graph fills more of the rectangle: centred across its
# long side, which starts at the rectangle's edge and whose far end is cut off. Returns the
# bounds' rectangle on the page.
FIT_JS = """
async ({ids, into, maxScale, cover}) => {
  const app = window.app, LG = window.LiteGraph, ds = app.canvas.ds;
  const title = LG.NODE_TITLE_HEIGHT || 30;
  const nodes = ids ? ids.map(id => app.graph.getNodeById(id)) : app.graph.nodes;
  const rects = nodes.map(n => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]);
  if (!ids) for (const g of app.graph.groups || []) rects.push([g.pos[0], g.pos[1], g.size[0], g.size[1]]);
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const r of rects) { x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]); x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]); }
  const box = app.canvas.canvas.getBoundingClientRect();
  const [L, T, R, B] = into;
  const fits = [(R - L) / (x1 - x0), (B - T) / (y1 - y0)];
  const scale = Math.min(maxScale, cover ? Math.sqrt(fits[0] * fits[1]) : Math.min(...fits));
  const pad = (room, size) => Math.max(0, room - size * scale) / 2;
  ds.scale = scale;
  ds.offset[0] = (L - box.left + pad(R - L, x1 - x0)) / scale - x0;
  ds.offset[1] = (T - box.top + pad(B - T, y1 - y0)) / scale - y0;
  app.graph.setDirtyCanvas(true, true);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const left = box.left + (x0 + ds.offset[0]) * scale, top = box.top + (y0 + ds.offset[1]) * scale;
  return {x: left, y: top, width: (x1 - x0) * scale, height: (y1 - y0) * scale, scale};
}
"""

# The node help panel's text (``.node-help-content``: the node library's help page in
# frontend 1.32, the right side panel's Info tab in 1.49), or null when none is shown.
HELP_TEXT_JS = """
() => {
  const h = [...document.querySelectorAll('.node-help-content')].find(e => e.getBoundingClientRect().width > 0);
  return h ? h.innerText : null;
}
"""

# Closes the node help: its store's closeHelp (both frontends), and 1.32's node library side
# bar, which the info button opened, by the command of its side bar button. 1.49's right side
# panel is closed by RESET_PANELS_JS.
CLOSE_HELP_JS = """
async () => {
""" + PINIA_JS + """
  const help = store('nodeHelp');
  if (help && typeof help.closeHelp === 'function') help.closeHelp();
  const ws = app.extensionManager;
  if (ws.sidebarTab && ws.sidebarTab.activeSidebarTabId === 'node-library')
    await ws.command.execute('Workspace.ToggleSidebarTab.node-library');
}
"""

# The template browser's cards: name, thumbnail (its src: 1.32 and 1.49 show a fetched
# image as a blob: URL, the stock picture as /assets/images/default-template.png) and size.
TEMPLATE_CARDS_JS = """
() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')].map(card => {
  const img = card.querySelector('img');
  return {name: card.dataset.testid.slice('template-workflow-'.length), src: img ? img.src : null,
          loaded: !!(img && img.complete && img.naturalWidth > 0), width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0};
})
"""

GRAPH_TYPES_JS = """
() => ({types: [...new Set(app.graph.nodes.map(n => n.type))], nodes: app.graph.nodes.length,
        name: (app.extensionManager && app.extensionManager.workflow && app.extensionManager.workflow.activeWorkflow
               && app.extensionManager.workflow.activeWorkflow.filename) || null})
"""


def chromium_path() -> str | None:
    """Debian's Chromium (``FLOWLORA_CHROMIUM`` overrides), or None."""
    explicit = os.environ.get("FLOWLORA_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def skip_reason() -> str | None:
    """Why the browser check cannot run on this machine, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python package 'playwright' is not installed in this environment (requirements-dev.txt; `make host` installs it)"
    if chromium_path() is None:
        if os.environ.get("FLOWLORA_CHROMIUM"):
            return f"FLOWLORA_CHROMIUM={os.environ['FLOWLORA_CHROMIUM']} is not an executable"
        return (
            "Chromium is not installed: scripts/host.sh installs Debian's 'chromium' only when it runs as root with apt-get; "
            "install it (apt-get install --no-install-recommends chromium) or point FLOWLORA_CHROMIUM at a Chromium binary"
        )
    return None


def write_frontend_settings(server_url: str, settings: dict[str, Any] = FRONTEND_SETTINGS) -> None:
    """Store frontend settings for the server's default user through its own API."""
    request = urllib.request.Request(server_url + "/settings", data=json.dumps(settings).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        r.read()


@dataclass
class ConsoleEntry:
    kind: str  # console message type, or "pageerror"
    text: str
    url: str = ""

    def benign_at_startup(self) -> bool:
        if self.kind == "error" and self.text.startswith(BENIGN_RESOURCE_ERROR):
            return True
        return any(all(part in self.text for part in parts) for parts in BENIGN_STARTUP_STACKS)


@dataclass
class WorkflowReport:
    """What the frontend made of one workflow."""

    name: str
    json_nodes: int
    json_links: int
    missing_types: list[dict]  # node types in the JSON that the frontend does not know
    missing_in_graph: list[dict]  # loaded nodes whose type is not registered (placeholders)
    missing_nodes_shown: list[str] | None  # the types the frontend told the user about, if it did
    missing_nodes_via: str | None  # where: its missing-nodes dialog (1.32) or its Errors panel (1.49)
    missing_nodes_ui_text: str  # the text of that dialog or panel group
    link_problems: list[str]  # in the loaded graph
    json_link_problems: list[str]  # in the file itself
    nodes_in_graph: int
    links_in_graph: int
    load_error: str | None
    console_errors: list[ConsoleEntry]
    resource_errors: list[ConsoleEntry]
    warnings: list[ConsoleEntry]
    dialogs: list[str]
    toasts: list[dict]
    seconds: float
    screenshot: Path | None = None
    graphs: list[dict] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)  # nodes with has_errors after the load settled
    missing_models: list[dict] = field(default_factory=list)  # model files the workflow names that the server lacks
    unlisted_combos: list[dict] = field(default_factory=list)  # combo values not among the server's options
    error_counts: dict | None = None  # 1.49's error overlay: total and its missing-model / missing-node parts
    other_errors: list[str] = field(default_factory=list)  # 1.49: node, prompt or execution errors, missing media
    error_overlay: str | None = None  # 1.49's "N errors found" overlay text, if shown

    def problems(self) -> list[str]:
        """Everything that makes the workflow fail the check, one line each."""
        out: list[str] = []
        for m in self.missing_types:
            out.append(f"missing node type: node #{m['id']} has type {m['type']!r}, which the frontend has not registered")
        for m in self.missing_in_graph:
            if not any(str(m["id"]) == str(x["id"]) for x in self.missing_types):
                out.append(f"node #{m['id']} ({m['type']}) loaded as a placeholder: its type is not registered")
        for f in self.flagged:
            if f["registered"] and not f["missing_model"]:
                out.append(f"node #{f['id']} ({f['type']}, {f['where']}) is flagged with errors (has_errors) after loading, and not for a missing model file")
        if self.missing_nodes_shown:
            out.append(f"the frontend reported missing node types in its {self.missing_nodes_via}: {', '.join(sorted(set(self.missing_nodes_shown)))}")
        out += [f"broken link in the file: {p}" for p in self.json_link_problems]
        out += [f"broken link in the loaded graph: {p}" for p in self.link_problems]
        if self.load_error:
            out.append(f"loadGraphData raised: {self.load_error[:1000]}")
        if not self.graphs or self.graphs[0]["nodes"] != self.json_nodes:
            out.append(f"the file has {self.json_nodes} nodes, the loaded graph {self.graphs[0]['nodes'] if self.graphs else 0}")
        if self.graphs and self.graphs[0]["links"] != self.json_links:
            out.append(f"the file has {self.json_links} links, the loaded graph {self.graphs[0]['links']}")
        if self.error_counts:
            c = self.error_counts
            if c["total"] > c["missing_models"] + c["missing_nodes"]:
                out.append(
                    f"the frontend counts {c['total']} errors (overlay: {self.error_overlay!r}), of which missing model files are "
                    f"{c['missing_models']} and missing node types {c['missing_nodes']}: {'; '.join(self.other_errors) or 'the rest unnamed'}"
                )
        out += [f"console {e.kind}: {e.text[:1500]}" for e in self.console_errors]
        out += [f"dialog left open: {d}" for d in self.dialogs]
        out += [f"toast ({t['severity']}): {t['text']}" for t in self.toasts if "error" in t["severity"] or "warn" in t["severity"]]
        return out

    def info(self) -> list[str]:
        """What a fresh install is expected to show: model files (or model folders) the user still has to add."""
        out = []
        for m in self.missing_models:
            where = f" (models/{m['directory']})" if m.get("directory") else ""
            out.append(f"missing model file: {m['name']}{where} for {m['type']} #{m['node']} widget {m['widget']!r}")
        for c in self.unlisted_combos:
            if not any(m["widget"] == c["widget"] and m["name"] == c["value"] for m in self.missing_models):
                out.append(f"value not offered by this server: {c['type']} #{c['node']} widget {c['widget']!r} = {c['value']!r} ({c['options']} options)")
        return out

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "ok": not self.problems(),
            "problems": self.problems(),
            "info": self.info(),
            "seconds": round(self.seconds, 3),
            "json_nodes": self.json_nodes,
            "json_links": self.json_links,
            "graphs": self.graphs,
            "missing_types": self.missing_types,
            "missing_nodes_shown": self.missing_nodes_shown,
            "missing_nodes_via": self.missing_nodes_via,
            "missing_nodes_ui_text": self.missing_nodes_ui_text,
            "missing_model_files": self.missing_models,
            "unlisted_combo_values": self.unlisted_combos,
            "flagged_nodes": self.flagged,
            "error_counts": self.error_counts,
            "error_overlay": self.error_overlay,
            "screenshot": str(self.screenshot) if self.screenshot else None,
            "console_errors": [e.__dict__ for e in self.console_errors],
            "resource_errors": [e.__dict__ for e in self.resource_errors],
            "warnings": [e.__dict__ for e in self.warnings],
            "dialogs": self.dialogs,
            "toasts": self.toasts,
        }


def check_workflow_json(workflow: dict) -> list[str]:
    """Link integrity of a UI-format workflow file, in the file's own terms.

    Every entry of ``links`` ([id, origin_id, origin_slot, target_id, target_slot, type])
    must join existing nodes and slots, the target input must hold the link id,
    the origin output must list it, and every link id a node refers to must exist.
    Slot types are compared where the file states them (``*`` connects to anything).
    """
    problems: list[str] = []
    graphs = [("root", workflow)]
    for sg in (workflow.get("definitions") or {}).get("subgraphs") or []:
        graphs.append((f"subgraph {sg.get('name') or sg.get('id')}", sg))
    for where, g in graphs:
        nodes = {n["id"]: n for n in g.get("nodes") or []}
        links: dict[int, tuple] = {}
        for raw in g.get("links") or []:
            if isinstance(raw, dict):  # subgraph definitions store links as objects
                link = (raw["id"], raw["origin_id"], raw["origin_slot"], raw["target_id"], raw["target_slot"], raw.get("type"))
            else:
                link = tuple(raw[:6])
            link_id, o_id, o_slot, t_id, t_slot, ltype = link
            tag = f"{where}: link {link_id} ({o_id}:{o_slot} -> {t_id}:{t_slot}, {ltype})"
            if link_id in links:
                problems.append(f"{tag}: duplicate link id")
            links[link_id] = link
            io = where != "root"
            origin, target = nodes.get(o_id), nodes.get(t_id)
            if origin is None and not (io and o_id < 0):
                problems.append(f"{tag}: origin node {o_id} does not exist")
                continue
            if target is None and not (io and t_id < 0):
                problems.append(f"{tag}: target node {t_id} does not exist")
                continue
            out_type = in_type = None
            if origin is not None:
                outputs = origin.get("outputs") or []
                if o_slot >= len(outputs):
                    problems.append(f"{tag}: {origin['type']} #{o_id} has {len(outputs)} outputs, no slot {o_slot}")
                    continue
                out = outputs[o_slot]
                out_type = out.get("type")
                if link_id not in (out.get("links") or []):
                    problems.append(f"{tag}: output '{out.get('name')}' of {origin['type']} #{o_id} does not list the link")
            if target is not None:
                inputs = target.get("inputs") or []
                if t_slot >= len(inputs):
                    problems.append(f"{tag}: {target['type']} #{t_id} has {len(inputs)} inputs, no slot {t_slot}")
                    continue
                inp = inputs[t_slot]
                in_type = inp.get("type")
                if inp.get("link") != link_id:
                    problems.append(f"{tag}: input '{inp.get('name')}' of {target['type']} #{t_id} holds link {inp.get('link')}, not this one")
            if out_type and in_type and not _types_connect(out_type, in_type):
                problems.append(f"{tag}: output type {out_type} of {origin['type']} #{o_id} does not match input '{inp.get('name')}' ({in_type}) of {target['type']} #{t_id}")
            if ltype and in_type and not _types_connect(ltype, in_type):
                problems.append(f"{tag}: link type {ltype} does not match input '{inp.get('name')}' ({in_type}) of {target['type']} #{t_id}")
        for n in nodes.values():
            for slot, inp in enumerate(n.get("inputs") or []):
                if inp.get("link") is not None and inp["link"] not in links:
                    problems.append(f"{where}: {n['type']} #{n['id']} input {slot} '{inp.get('name')}' refers to link {inp['link']}, which is not in links")
            for slot, out in enumerate(n.get("outputs") or []):
                for link_id in out.get("links") or []:
                    if link_id not in links:
                        problems.append(f"{where}: {n['type']} #{n['id']} output {slot} '{out.get('name')}' lists link {link_id}, which is not in links")
    return problems


def _types_connect(a: str, b: str) -> bool:
    """LiteGraph.isValidConnection for string types: '*' or '' matches all, ',' separates alternatives."""
    if a in ("*", "", 0) or b in ("*", "", 0) or a == b:
        return True
    left = {t.strip().lower() for t in str(a).split(",")}
    right = {t.strip().lower() for t in str(b).split(",")}
    return bool(left & right) or "*" in left or "*" in right


class Frontend:
    """One headless Chromium page on a ComfyUI server's frontend.

    Use as a context manager: ``with Frontend(server.url) as fe: fe.load_workflow(...)``.
    ``ready_type`` is a node type that must be registered before the app counts
    as ready (the pack's, so its definitions have arrived).
    """

    def __init__(self, server_url: str, ready_type: str = "FlowLoRALoraTrainer", timeout_s: float = 120.0, viewport: dict | None = None):
        self.server_url = server_url
        self.ready_type = ready_type
        self.timeout_ms = timeout_s * 1000
        self.viewport = viewport or VIEWPORT
        self.console: list[ConsoleEntry] = []
        self.startup_errors: list[ConsoleEntry] = []
        self.startup_seconds = 0.0

    def __enter__(self) -> Frontend:
        import tempfile

        from playwright.sync_api import sync_playwright

        reason = skip_reason()
        if reason:
            raise RuntimeError(reason)
        self._profile = tempfile.TemporaryDirectory(prefix="flowlora-chromium-")
        self._pw = sync_playwright().start()
        try:
            t0 = time.monotonic()
            # A persistent context is how Playwright takes a --user-data-dir: a new, empty one.
            self.context = self._pw.chromium.launch_persistent_context(
                self._profile.name,
                executable_path=chromium_path(),
                headless=True,
                args=list(CHROMIUM_ARGS),
                viewport=self.viewport,
            )
            self.context.add_init_script(INIT_SCRIPT)
            self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
            self.page.set_default_timeout(self.timeout_ms)
            self.page.on("console", self._on_console)
            self.page.on("pageerror", lambda e: self.console.append(ConsoleEntry("pageerror", f"{e.name}: {e.message}\n{e.stack or ''}")))
            write_frontend_settings(self.server_url)
            self.page.goto(self.server_url + "/", wait_until="load")
            self.page.wait_for_function(READY_JS, arg=self.ready_type, timeout=self.timeout_ms)
            self.startup_seconds = time.monotonic() - t0
            self.startup_errors = [e for e in self.console if e.kind in ("error", "pageerror") and not e.benign_at_startup()]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        context = getattr(self, "context", None)
        if context is not None:
            try:
                context.close()
            except Exception:
                pass
        self._pw.stop()
        self._profile.cleanup()

    def _on_console(self, message) -> None:
        if message.type in ("error", "warning", "assert"):
            location = message.location or {}
            self.console.append(ConsoleEntry(message.type, message.text, location.get("url", "")))

    def registered_types(self) -> set[str]:
        return set(self.page.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.page.evaluate(OPEN_DIALOGS_JS):
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(100)

    def load_workflow(self, workflow: dict, name: str, screenshot: Path | None = None) -> WorkflowReport:
        """``app.loadGraphData(workflow)`` and inspect the result; optionally save a screenshot."""
        self.close_dialogs()
        self.page.evaluate(RESET_PANELS_JS)
        self.page.evaluate("() => document.querySelectorAll('.p-toast-message').forEach(t => t.remove())")
        mark = len(self.console)
        t0 = time.monotonic()
        result = self.page.evaluate(LOAD_AND_CHECK_JS, {"workflow": workflow, "name": name})
        # Give deferred work (widgets, node previews, dialogs, error flags) a moment to complain.
        self.page.wait_for_timeout(300)
        state = self.page.evaluate(STATE_JS)
        seconds = time.monotonic() - t0
        dialogs = self.page.evaluate(OPEN_DIALOGS_JS)
        # How the frontend told the user about missing node types, by what this frontend has.
        shown, via, ui_text = None, None, ""
        if result["missing_dialog"] is not None:  # 1.32: app.showMissingNodesError -> dialog
            shown, via, ui_text = result["missing_dialog"], "missing-nodes dialog", " | ".join(dialogs)
        elif state["missing_nodes_store"]:  # 1.49: missingNodesError store -> overlay -> Errors panel
            shown = state["missing_nodes_store"]
            panel = self.page.evaluate(OPEN_ERRORS_PANEL_JS) if state["overlay"] else None
            via = "error overlay and Errors panel" if panel else "missing-nodes store, with no overlay or panel shown"
            ui_text = " | ".join(t for t in (state["overlay"], panel) if t)
        toasts = self.page.evaluate(TOASTS_JS)
        new = self.console[mark:]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(screenshot))
        return WorkflowReport(
            name=name,
            json_nodes=len(workflow.get("nodes") or []),
            json_links=len(workflow.get("links") or []),
            missing_types=result["missing_types"],
            missing_in_graph=result["missing_in_graph"],
            missing_nodes_shown=shown,
            missing_nodes_via=via,
            missing_nodes_ui_text=ui_text,
            link_problems=result["link_problems"],
            json_link_problems=check_workflow_json(workflow),
            nodes_in_graph=result["nodes_in_graph"],
            links_in_graph=result["links_in_graph"],
            load_error=result["load_error"],
            console_errors=[e for e in new if e.kind in ("error", "pageerror", "assert") and not e.text.startswith(BENIGN_RESOURCE_ERROR)],
            resource_errors=[e for e in new if e.text.startswith(BENIGN_RESOURCE_ERROR)],
            warnings=[e for e in new if e.kind == "warning"],
            dialogs=dialogs,
            toasts=toasts,
            seconds=seconds,
            screenshot=screenshot,
            graphs=result["graphs"],
            flagged=state["flagged"],
            missing_models=state["missing_models"],
            unlisted_combos=state["unlisted_combos"],
            error_counts=state["error_counts"],
            other_errors=state["other_errors"],
            error_overlay=state["overlay"],
        )

    # ---- what a user does besides loading a workflow

    @property
    def version(self) -> str:
        """The frontend's version (``comfyui-frontend-package``), as the page reports it."""
        return self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")

    def settle(self, function: str, arg: Any = None) -> tuple[bool, Any]:
        """``(True, value)`` of the page function ``function(arg)`` once its promise settles, ``(False, None)``
        when it has not within the page timeout. ``page.evaluate`` itself waits for ever: on 0.33's frontend
        ``setting.set('Comfy.Locale', ...)`` was seen to store the setting and never resolve, and the whole
        run hung (a fresh-clone CI run, 2026-12-07)."""
        race = ("async ([arg, ms]) => await Promise.race([Promise.resolve((" + function + ")(arg)).then(value => ({settled: true, value})),"
                " new Promise(resolve => setTimeout(() => resolve({settled: false}), ms))])")
        out = self.page.evaluate(race, [arg, self.timeout_ms])
        return out["settled"], out.get("value")

    def set_setting(self, setting_id: str, value: Any) -> None:
        """Change a frontend setting as the settings dialog does (``app.extensionManager.setting.set``).
        When the frontend's promise does not settle (:meth:`settle`), the setting must read back as ``value``."""
        settled, _ = self.settle("([id, value]) => app.extensionManager.setting.set(id, value)", [setting_id, value])
        if not settled:
            now = self.page.evaluate("(id) => app.extensionManager.setting.get(id)", setting_id)
            if now != value:
                raise TimeoutError(f"frontend setting {setting_id} = {value!r}: not applied within {self.timeout_ms / 1000:.0f} s (it reads {now!r})")

    def fit_view(self, node_ids: list[int] | None = None, into: tuple[float, float, float, float] | None = None, max_scale: float = 1.5,
                 cover: bool = False) -> dict:
        """Zoom and pan so the nodes (default: the whole graph) fit ``into`` (page pixels; default the
        viewport less 80 pixels at the left for the side bar, 110 at the top for the menus), or with
        ``cover`` fill more of it, cut at the far end of their long side (``FIT_JS``); returns their
        rectangle on the page."""
        width, height = self.viewport["width"], self.viewport["height"]
        into = into or (80, 110, width - 20, height - 40)
        return self.page.evaluate(FIT_JS, {"ids": node_ids, "into": list(into), "maxScale": max_scale, "cover": cover})

    def click_run(self) -> None:
        """Queue the graph with the Run button of the action bar (both frontends label it 'Run')."""
        self.page.get_by_role("button", name="Run", exact=True).first.click()

    def click_cancel(self) -> None:
        """Stop the running prompt with the action bar's 'Cancel current run' button (both frontends)."""
        self.page.get_by_role("button", name="Cancel current run").first.click()

    def select_node(self, node_id: int) -> None:
        self.page.evaluate(
            "(id) => { app.canvas.deselectAll(); app.canvas.selectNode(app.graph.getNodeById(id)); app.graph.setDirtyCanvas(true, true); }",
            node_id,
        )

    def open_node_help(self, node_id: int) -> str:
        """Select the node and press the selection toolbox's info button, as a user does; returns the help
        panel's text once the page has arrived (1.32 shows it in the node library side bar, 1.49 in
        the right side panel's Info tab)."""
        self.close_node_help()
        # in the middle of the page, clear of both side panels, with room above for the toolbox
        width, height = self.viewport["width"], self.viewport["height"]
        self.fit_view([node_id], into=(width * 0.3, 260, width * 0.7, height - 60), max_scale=1.0)
        self._click_settled('[data-testid="info-button"]', prepare=lambda: self.select_node(node_id))
        self.page.wait_for_function("() => { const t = (" + HELP_TEXT_JS + ")(); return t && t.trim().length > 40 }", timeout=self.timeout_ms)
        self.page.wait_for_timeout(300)  # the markdown's images and code blocks settle
        return self.page.evaluate(HELP_TEXT_JS)

    def _click_settled(self, selector: str, prepare=None, attempts: int = 4, appear_s: float = 5.0) -> None:
        """Click an element once it has stopped moving, calling ``prepare`` first (again on each attempt).
        The selection toolbox slides in and is drawn again meanwhile (a click then can wait on a
        detached button until the timeout), and a selection made right after the view moved
        sometimes shows no toolbox until the node is selected again."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        rect = f"() => {{ const e = document.querySelector({json.dumps(selector)}); return e && e.isConnected ? JSON.stringify(e.getBoundingClientRect()) : null }}"
        for _ in range(attempts):
            if prepare is not None:
                prepare()
            last, deadline = None, time.monotonic() + appear_s
            while time.monotonic() < deadline:  # the same rectangle twice, 300 ms apart
                now = self.page.evaluate(rect)
                if now is not None and now == last:
                    break
                last = now
                self.page.wait_for_timeout(300)
            else:
                continue
            try:
                self.page.locator(selector).first.click(timeout=10_000)
                return
            except PlaywrightTimeout:
                continue
        raise TimeoutError(f"could not click {selector} in {attempts} attempts")

    def close_node_help(self) -> None:
        """Close a help panel left open (``CLOSE_HELP_JS``)."""
        if self.page.evaluate(HELP_TEXT_JS) is None:
            return
        self.page.evaluate(RESET_PANELS_JS)
        self.settle(CLOSE_HELP_JS)  # then waits for the panel to go, which a promise that never settles may still do
        self.page.wait_for_function("() => (" + HELP_TEXT_JS + ")() === null", timeout=self.timeout_ms)

    def open_templates(self, folder: str) -> tuple[list[dict], dict[str, int]]:
        """Open the Templates browser from the side bar and pick ``folder`` (a custom node pack's folder name,
        listed under Extensions); returns its cards once every thumbnail has loaded or failed, and the
        status of each ``/workflow_templates/`` request the page made meanwhile (by URL path)."""
        self.close_dialogs()
        responses: dict[str, int] = {}

        def seen(response) -> None:
            path = urllib.parse.urlsplit(response.url).path
            if "/workflow_templates" in path:
                responses[path] = response.status

        self.page.on("response", seen)
        self.page.get_by_text("Templates", exact=True).first.click()
        dialog = self.page.locator('[role="dialog"]')
        dialog.get_by_text(folder, exact=True).first.click()
        self.page.wait_for_function("() => document.querySelectorAll('[data-testid^=\"template-workflow-\"]').length > 0", timeout=self.timeout_ms)
        cards = self.page.locator('[data-testid^="template-workflow-"]')
        for i in range(cards.count()):  # thumbnails may load lazily: bring each into view
            cards.nth(i).scroll_into_view_if_needed()
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid^=\"template-workflow-\"] img')].every(i => i.complete)", timeout=self.timeout_ms
        )
        cards.first.scroll_into_view_if_needed()
        self.page.wait_for_timeout(300)
        self.page.remove_listener("response", seen)
        return self.page.evaluate(TEMPLATE_CARDS_JS), responses

    def open_template_card(self, name: str) -> dict:
        """Click a card of the open Templates browser; returns the node types and count of the graph it loads."""
        before = self.page.evaluate(GRAPH_TYPES_JS)
        self.page.locator(f'[data-testid="template-workflow-{name}"]').first.click()
        self.page.wait_for_function(
            "(before) => { const n = app.graph.nodes.length; return n > 0 && document.querySelectorAll('[data-testid^=\"template-workflow-\"]').length === 0"
            " && (n !== before.nodes || app.graph.nodes.some(x => !before.types.includes(x.type))) }",
            arg=before, timeout=self.timeout_ms,
        )
        self.page.wait_for_timeout(500)
        loaded = self.page.evaluate(GRAPH_TYPES_JS)
        return {**loaded, "types": set(loaded["types"])}

"""Node help pages: every registered node has an English and a Chinese page in ``web/docs``.

ComfyUI's frontend (``comfyui_frontend_package``: 1.32.9 beside ComfyUI 0.3.75, 1.49.6
beside 0.33; ``NodeHelpService.fetchCustomNodeHelp``) fetches, for a node whose
``python_module`` is ``custom_nodes.<pack>`` (``<pack>`` = the pack's folder name, cut
at an ``@``) and the UI locale (``en`` unless the user chose another):

1. ``/extensions/<pack>/docs/<node id>/<locale>.md``, and if that is missing
2. ``/extensions/<pack>/docs/<node id>.md``, else the node's description.

ComfyUI serves the folder named by the pack's ``WEB_DIRECTORY`` at
``/extensions/<pack>/`` (``nodes.load_custom_node`` reads it before the V3
``comfy_entrypoint``). So English lives in ``web/docs/<node id>.md`` (the fallback for
every locale without its own page) and Chinese in ``web/docs/<node id>/zh.md``. A page
names every input and output of its node in backticks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import harness
import pytest

DOCS = harness.REPO / "web" / "docs"
LOCALES = ("zh",)


@pytest.fixture(scope="module")
def registered(comfy_root) -> dict:
    """``{node id: schema}`` of what the pack hands ComfyUI (``FlowLoraExtension.get_node_list``)."""
    from flowlora.nodes import FlowLoraExtension

    schemas = [cls.GET_SCHEMA() for cls in asyncio.run(FlowLoraExtension().get_node_list())]
    return {schema.node_id: schema for schema in schemas}


def pages(node_id: str) -> dict[str, Path]:
    return {"en": DOCS / f"{node_id}.md", **{locale: DOCS / node_id / f"{locale}.md" for locale in LOCALES}}


def test_the_pack_exports_web_directory_holding_the_docs(comfy_root):
    """The root ``__init__`` as ComfyUI's loader reads it: WEB_DIRECTORY resolved against the pack folder."""
    spec = importlib.util.spec_from_file_location("flowlora_help_probe", harness.REPO / "__init__.py", submodule_search_locations=[str(harness.REPO)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "comfy_entrypoint", None)), "the V3 entry point must stay beside WEB_DIRECTORY"
    web = Path(os.path.abspath(os.path.join(harness.REPO, module.WEB_DIRECTORY)))
    assert web / "docs" == DOCS and DOCS.is_dir(), f"WEB_DIRECTORY = {module.WEB_DIRECTORY!r} resolves to {web}, which has no docs/"


def test_every_node_has_both_pages_naming_all_its_inputs_and_outputs(registered):
    assert registered, "the pack registers no nodes"
    problems = []
    for node_id, schema in sorted(registered.items()):
        names = [i.id for i in schema.inputs] + [o.display_name or o.id for o in schema.outputs]
        for locale, path in pages(node_id).items():
            if not path.is_file() or not path.read_text(encoding="utf-8").strip():
                problems.append(f"{path.relative_to(harness.REPO)}: missing or empty")
                continue
            text = path.read_text(encoding="utf-8")
            missing = [name for name in names if f"`{name}`" not in text]
            if missing:
                problems.append(f"{path.relative_to(harness.REPO)} ({locale}): does not name {', '.join(missing)}")
    assert not problems, "\n".join(problems)


def test_no_page_for_a_node_the_pack_does_not_register(registered):
    stray = [p.name for p in DOCS.glob("*.md") if p.stem not in registered]
    stray += [p.name for p in DOCS.iterdir() if p.is_dir() and p.name not in registered]
    stray += [str(p.relative_to(DOCS)) for p in DOCS.glob("*/*") if p.name not in {f"{locale}.md" for locale in LOCALES}]
    assert not stray, f"help pages without a registered node (renamed or removed?): {stray}"


def test_the_host_frontend_fetches_these_urls(comfy_root):
    """The convention above, read from the JavaScript of the frontend this host serves."""
    try:
        import comfyui_frontend_package
    except ImportError:
        pytest.skip("this host has no comfyui_frontend_package (ComfyUI serves its own web/ folder)")
    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    localized = re.compile(r"/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}/\$\{\w+\}\.md")
    fallback = re.compile(r"/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}\.md")
    found = {"localized": False, "fallback": False}
    for js in assets.glob("*.js"):
        text = js.read_text(encoding="utf-8", errors="replace")
        if "/docs/" in text:
            found["localized"] |= bool(localized.search(text))
            found["fallback"] |= bool(fallback.search(text))
    assert all(found.values()), f"{assets}: the frontend no longer fetches /extensions/<pack>/docs/<node>[/<locale>].md ({found}); move the pages"


@pytest.mark.server
def test_the_server_serves_each_page_at_the_frontends_url(server, registered):
    info = server.get("/object_info")
    for node_id in sorted(registered):
        module = info[node_id]["python_module"]
        assert module.startswith("custom_nodes."), module
        pack = module.split(".")[1].split("@")[0]  # the frontend's extractCustomNodeName
        urls = {"en": f"/extensions/{pack}/docs/{node_id}.md", **{locale: f"/extensions/{pack}/docs/{node_id}/{locale}.md" for locale in LOCALES}}
        for locale, url in urls.items():
            try:
                with urllib.request.urlopen(server.url + url, timeout=30) as r:
                    body, kind = r.read(), r.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                raise AssertionError(f"{url}: HTTP {e.code}; the help panel would show only the node's description") from None
            assert "text/html" not in kind, f"{url}: {kind} (the frontend ignores HTML answers)"
            assert body == pages(node_id)[locale].read_bytes(), url

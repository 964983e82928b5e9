"""Find image/caption pairs in a folder and turn captions into prompts.

Folder layout (kohya-compatible)::

    folder/
      a.png  a.txt          repeated once
      10_my style/          kohya repeat folder: every image here counts 10 times
        b.jpg  b.txt
      .flowlora_cache/      hidden folders are skipped

A caption is the same-stem ``.txt`` file, UTF-8 (a BOM is tolerated), at most
:data:`MAX_CAPTION_BYTES`; a larger one is a bad file (skipped or fatal per
the dataset's ``bad_files`` policy) whose error names it. NUL bytes are
removed with a warning naming the file (they are never text; a UTF-16 file
read as UTF-8 shows them), and an empty caption is used as it is (the prompt
is then the trigger alone) with a warning naming the file. An
optional line of the form ``---think---`` (three or more dashes each side,
"think" in any case, surrounding blanks tolerated) splits it into the caption
(before) and a think label (after), the SenseNova-U1 sidecar format.
"""

from __future__ import annotations

import logging
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, require
from ..registry import Registry
from .errors import DataError, FatalDataError
from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

CAPTION_SUFFIX = ".txt"
THINK_DELIMITER = re.compile(r"^[ \t]*-{3,}[ \t]*think[ \t]*-{3,}[ \t]*$", re.IGNORECASE | re.MULTILINE)
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
PLACEHOLDERS = ("trigger", "caption", "think", "folder")
DEFAULT_TEMPLATE = "{trigger}, {caption}"
MAX_CAPTION_BYTES = 64 * 1024
"""Largest caption file read (64 KiB, some 15,000 tokens): far above any real caption, far below
what makes a text encoder ask for hundreds of GB."""

MISSING_CAPTION: Registry = Registry("missing-caption policy")
"""What to do with an image that has no ``.txt``: functions ``(SourceImage, CaptionConfig) -> str | None``
(None skips the image; raising :class:`DataError` fails the run)."""


@dataclass(frozen=True)
class SourceImage:
    """One image file found in the folder.

    ``repeats`` comes from a kohya ``N_name`` folder (1 at the top level) and
    ``folder_name`` is that folder's ``name`` part ("" at the top level).
    """

    path: Path
    caption_path: Path | None
    repeats: int
    folder_name: str


def scan_folder(root: str | Path) -> list[SourceImage]:
    """Images in ``root`` and in its ``N_name`` subfolders, sorted by path.

    Raises :class:`DataError` when ``root`` does not exist, is not a folder or
    holds no image; other subfolders are ignored with a warning.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "does not exist", "give an absolute folder path, or a folder under ComfyUI's input folder")
    if not root.is_dir():
        raise DataError(root, "is not a folder", "point the dataset at the folder that holds the images")
    found = _images_in(root, 1, "")
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        match = REPEAT_FOLDER.match(sub.name)
        if match is None:
            logger.warning("%s: ignored; only subfolders named N_name (kohya repeats, e.g. 10_cat) are read", sub)
            continue
        repeats = int(match.group(1))
        if repeats < 1:
            logger.warning("%s: ignored; a repeat count of 0 uses none of its images", sub)
            continue
        found.extend(_images_in(sub, repeats, match.group(2)))
    if not found:
        raise DataError(root, f"holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images (nor do its N_name subfolders)", "put the training images in this folder")
    return found


def _images_in(folder: Path, repeats: int, folder_name: str) -> list[SourceImage]:
    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        caption = path.with_suffix(CAPTION_SUFFIX)
        out.append(SourceImage(path, caption if caption.is_file() else None, repeats, folder_name))
    return out


def split_think(text: str) -> tuple[str, str | None]:
    """``(caption, think)`` of a caption file's text; think is None when absent or empty."""
    match = THINK_DELIMITER.search(text)
    if match is None:
        return text.strip(), None
    think = text[match.end():].strip()
    return text[: match.start()].strip(), think or None


def read_caption(path: str | Path) -> tuple[str, str | None]:
    """``(caption, think)`` from a UTF-8 caption file.

    Raises :class:`DataError` naming a file above :data:`MAX_CAPTION_BYTES` or
    not UTF-8. NUL bytes are removed and an empty caption kept, each with a
    warning naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CAPTION_BYTES + 1)
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror})", "check that the caption file exists and is readable") from None
    if len(data) > MAX_CAPTION_BYTES:
        size = os.path.getsize(path)
        raise DataError(path, f"is a {size:,}-byte caption, above the limit of {MAX_CAPTION_BYTES:,} bytes", "shorten it to a description of the image, or remove it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})", "re-save the caption as UTF-8") from None
    if "\x00" in text:
        logger.warning("%s: %d NUL bytes removed from the caption (a UTF-16 file?); re-save it as UTF-8", path, text.count("\x00"))
        text = text.replace("\x00", "")
    caption, think = split_think(text)
    if not caption:
        logger.warning("%s: the caption is empty; the image trains on the template without a caption (the trigger alone)", path)
    return caption, think


def outside_folder(path: Path, root: Path) -> str | None:
    """The real path of ``path`` when it leaves real folder ``root`` (a symbolic link out of the dataset), else None."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    try:
        inside = os.path.commonpath([real, top]) == top
    except ValueError:  # different drives on Windows
        inside = False
    return None if inside else real


@dataclass(frozen=True)
class CaptionConfig:
    """How a caption becomes the prompt that is encoded.

    ``template`` may use ``{trigger}``, ``{caption}``, ``{think}`` and
    ``{folder}`` (the kohya folder's name part). With an empty trigger the
    ``{trigger}`` placeholder and the separators after it are removed, so the
    default ``"{trigger}, {caption}"`` gives the bare caption (U1's rule).
    ``dropout`` is the per-step probability that the trainer uses the empty
    prompt instead. ``missing`` picks a :data:`MISSING_CAPTION` policy.
    """

    trigger: str = ""
    template: str = DEFAULT_TEMPLATE
    dropout: float = 0.0
    missing: str = "default"
    default_caption: str = ""

    def __post_init__(self):
        require(math.isfinite(self.dropout) and 0.0 <= self.dropout <= 1.0, "caption_dropout", self.dropout, "must lie in [0, 1]")
        MISSING_CAPTION.get(self.missing, "missing_caption")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        except ValueError as e:
            raise ConfigError("template", self.template, f"is not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
        unknown = sorted(fields - set(PLACEHOLDERS))
        if unknown:
            raise ConfigError("template", self.template, f"unknown placeholder(s) {', '.join(unknown)}; valid: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        require("caption" in fields or "trigger" in fields, "template", self.template, "must contain {caption} or {trigger}")

    def render(self, caption: str, think: str | None = None, folder: str = "") -> str:
        """The prompt for one image, stripped of surrounding blanks and separators."""
        template = self.template
        if not self.trigger.strip():
            template = re.sub(r"\{trigger\}[\s,;:]*|[\s,;:]*\{trigger\}", "", template)
        text = template.format(trigger=self.trigger.strip(), caption=caption, think=think or "", folder=folder)
        return text.strip().strip(",;:").strip()

    def caption_for(self, source: SourceImage) -> tuple[str, str | None] | None:
        """``(caption, think)`` for ``source``; None when the policy skips it.

        Raises :class:`DataError` for a non-UTF-8 caption, or a missing one under ``fail``.
        """
        if source.caption_path is not None:
            return read_caption(source.caption_path)
        caption = MISSING_CAPTION.get(self.missing)(source, self)
        return None if caption is None else (caption, None)


@MISSING_CAPTION.register("default")
def _use_default(source: SourceImage, config: CaptionConfig) -> str:
    """The default caption (may be empty: then the prompt is the trigger alone)."""
    return config.default_caption


@MISSING_CAPTION.register("folder_name")
def _use_folder_name(source: SourceImage, config: CaptionConfig) -> str:
    """The kohya folder's name part ("cat" for 10_cat), else the default caption."""
    return source.folder_name or config.default_caption


@MISSING_CAPTION.register("skip")
def _skip(source: SourceImage, config: CaptionConfig) -> None:
    """Leave the image out (SenseNova-U1's trainer does this)."""
    logger.warning("%s: no caption file %s; image skipped", source.path, source.path.with_suffix(CAPTION_SUFFIX).name)
    return None


@MISSING_CAPTION.register("fail")
def _fail(source: SourceImage, config: CaptionConfig) -> str:
    """Stop with an error naming the image."""
    raise FatalDataError(source.path, f"has no caption file {source.path.with_suffix(CAPTION_SUFFIX).name}", "write one, or set missing_caption to default, folder_name or skip")

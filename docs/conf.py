"""Sphinx configuration of the torchrl_mbdpo documentation (MyST Markdown pages, autodoc API reference, a
configuration reference generated from the command schemas). Built by `make docs` with warnings as errors."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import torchrl_mbdpo  # noqa: E402

project = "torchrl_mbdpo"
author = "torchrl_mbdpo developers"
release = version = torchrl_mbdpo.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "config_reference"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures already say it; docstrings name the types that matter
autodoc_inherit_docstrings = False  # TorchRL's and torch's own docstrings are not this library's to render
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "furo"
html_title = f"torchrl_mbdpo {version}"
html_static_path = []
suppress_warnings = ["myst.xref_missing"] if False else []

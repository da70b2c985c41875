"""Sphinx configuration of the lapps docs (``pip install '.[docs]'``, then
``sphinx-build -W docs docs/_build``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "lapps"
author = "the lapps developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "lapps_docs"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
html_theme = "furo"
html_title = "lapps"
autodoc_member_order = "bysource"
nitpicky = False

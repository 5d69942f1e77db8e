"""Sphinx configuration of the commtune documentation site.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are errors).
The knob and preset tables come from the code (``_ext/commtune_tables.py``), the CLI
reference from the real argparse parser (``commtune.cli.build_parser``), and the
tutorials are the notebooks in ``notebooks/``, copied here and executed by myst-nb
(``COMMTUNE_DOCS_EXECUTE=off`` renders them without outputs, for a quick build).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

from commtune import __version__  # noqa: E402

project = "commtune"
author = "the commtune authors"
copyright = "the commtune authors"
release = version = __version__

extensions = [
    "myst_nb",  # Markdown pages (myst-parser) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "commtune_tables",
]

exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"commtune {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
# The runtime's modules import torch at the top; without the torch extra they are documented mocked.
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]

# --- Tutorials: the notebooks of notebooks/, executed at build time -------------------------
nb_execution_mode = os.environ.get("COMMTUNE_DOCS_EXECUTE", "force")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_merge_streams = True
_GENERATED = DOCS / "tutorials" / "_generated"


def _copy_notebooks() -> None:
    """Copy ``notebooks/*.ipynb`` under ``tutorials/_generated`` (the sources stay without outputs)."""
    if _GENERATED.exists():
        shutil.rmtree(_GENERATED)
    _GENERATED.mkdir(parents=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, _GENERATED / nb.name)


def _quiet_kernel_env() -> None:
    """Keep the executing kernel's caches out of $HOME and the live emulated-cluster cells off."""
    tmp = Path(tempfile.mkdtemp(prefix="commtune-docs-"))
    for var in ("MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        (tmp / var).mkdir()
        os.environ[var] = str(tmp / var)
    os.environ["MPLBACKEND"] = "Agg"
    os.environ.pop("COMMTUNE_NOTEBOOK_LIVE", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


_copy_notebooks()
_quiet_kernel_env()

"""The documentation site builds with warnings as errors, and its generated pages
say what the code says (knobs from the registry, flags from the parser)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("sphinxarg")
pytest.importorskip("furo")

ROOT = Path(__file__).resolve().parents[1]


def _text(path: Path) -> str:
    """The visible text of an HTML page: tags dropped (highlighting splits words), entities decoded,
    white space collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-html")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(ROOT / "docs"), str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return out


@pytest.mark.slow
def test_knobs_page_lists_every_knob(site):
    from commtune.knobs import KNOBS

    page = (site / "concepts" / "knobs.html").read_text(encoding="utf-8")
    assert page.count("<table") >= 2 and "list-table" not in page  # rendered tables, not markup
    text = _text(site / "concepts" / "knobs.html")
    for knob in KNOBS.values():
        assert knob.name in text and knob.flag in text, knob.name
        assert knob.accepted() in text, knob.name


@pytest.mark.slow
def test_cli_page_has_every_subcommand_and_the_main_flags(site):
    from commtune.cli import build_parser

    text = _text(site / "reference" / "cli.html")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"commtune {name}" in text, name
    for flag in ("--bw", "--model", "--space", "--sampler", "--format"):
        assert flag in text, flag
    assert "Accepted ranges" in text


@pytest.mark.slow
def test_api_and_tutorial_pages_are_there(site):
    api = _text(site / "reference" / "api.html")
    for name in ("simulate", "search", "wrap", "AutoTuner", "Knobs", "schedule_batch"):
        assert name in api, name
    tutorials = sorted((site / "tutorials" / "_generated").glob("*.html"))
    assert [p.stem for p in tutorials] == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

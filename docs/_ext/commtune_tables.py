"""Sphinx directives that write tables from commtune's own registries at build time.

``{knobs-table}`` renders :data:`commtune.knobs.KNOBS` (and the two baselines),
``{presets-table}`` the network, intra-node and device presets, ``{cli-description}`` and ``{cli-epilog}``
the accepted ranges that end ``commtune --help``, so the pages
never hold a copy that can go stale.
"""
from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _inline(text: object) -> list[nodes.Node]:
    """One cell's text as inline nodes: ``code`` spans become literals, the rest plain text."""
    parts = re.split(r"``(.+?)``", " ".join(str(text).split()))
    return [nodes.literal(part, part) if i % 2 else nodes.Text(part) for i, part in enumerate(parts) if part]


def _table(header: list[str], rows: list[list[str]], widths: list[int]) -> nodes.table:
    """A docutils table built node by node (the same under the MyST and reST parsers)."""
    table = nodes.table(classes=["commtune-generated"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=w) for w in widths)

    def row(cells: list[str]) -> nodes.row:
        r = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph("", "", *_inline(cell))
            r += entry
        return r

    thead = nodes.thead()
    thead += row(header)
    tbody = nodes.tbody()
    tbody.extend(row(r) for r in rows)
    group += thead
    group += tbody
    return table


class _TableDirective(SphinxDirective):
    has_content = False

    def tables(self) -> list[nodes.Node]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        return self.tables()


class KnobsTable(_TableDirective):
    """Every knob: name, flag, kind, default, accepted values, when it applies, meaning."""

    def tables(self) -> list[nodes.Node]:
        from commtune.knobs import BASELINES, KNOBS, SHARDED_BASELINES

        rows = []
        for k in KNOBS.values():
            when = "always" if k.applies_when is None else f"``{k.applies_when[0]}`` = {', '.join(map(str, k.applies_when[1]))}"
            flag = f"``{k.flag}``" + (" / ``--flat``" if k.name == "hierarchical" else "")
            rows.append([f"``{k.name}``", flag, f"``{k.show(k.default)}``", k.accepted(), when])
        meanings = nodes.definition_list()
        for k in KNOBS.values():
            item = nodes.definition_list_item()
            item += nodes.term("", "", nodes.literal(k.name, k.name))
            definition = nodes.definition()
            definition += nodes.paragraph("", "", *_inline(k.help))
            item += definition
            meanings += item
        baselines = [[f"``{name}``", knobs.describe()] for name, knobs in {**BASELINES, **SHARDED_BASELINES}.items()]
        return [_table(["knob", "flag", "default", "accepted", "applies when"], rows, [22, 20, 12, 26, 20]),
                nodes.paragraph("", "What each knob does:"), meanings,
                nodes.paragraph("", "The baselines searches report against (each framework's defaults):"),
                _table(["baseline", "knobs"], baselines, [15, 85])]


class PresetsTable(_TableDirective):
    """Network presets (``--cluster NAME``), intra-node fabrics (``--intra``) and devices (``--device``)."""

    def tables(self) -> list[nodes.Node]:
        from commtune.cluster import preset, preset_catalog, preset_names
        from commtune.devices import all_devices
        from commtune.units import format_bandwidth, format_time

        data = preset_catalog()
        nets = []
        for name in preset_names():
            c = preset(name)
            cap = format_bandwidth(c.per_stream_Bps) if c.per_stream_Bps else "none"
            nets.append([f"``{name}``", format_bandwidth(c.inter_bw_Bps), cap, format_time(c.inter_latency_s),
                         c.device, data["networks"][name]["description"]])
        intra = [[f"``{n}``", d["bw"], d["latency"], d["description"]] for n, d in data["intra"].items()]
        devices = [[f"``{n}``", ", ".join(f"{k} {v:g}" for k, v in d.tflops.items()), d.description]
                   for n, d in all_devices().items()]
        return [_table(["network (``--cluster``)", "link per node", "per-stream cap", "latency", "device", "description"],
                       nets, [14, 12, 12, 8, 8, 46]),
                _table(["intra-node fabric (``--intra``)", "bandwidth", "latency", "description"], intra, [18, 12, 10, 60]),
                _table(["device (``--device``)", "effective TFLOP/s", "description"], devices, [14, 34, 52])]


class CliEpilog(SphinxDirective):
    """The epilog of ``commtune --help`` (accepted ranges), verbatim."""

    has_content = False
    part = "epilog"

    def run(self) -> list[nodes.Node]:
        from commtune.cli import build_parser

        text = getattr(build_parser(), self.part) or ""
        return [nodes.literal_block(text, text)]


class CliDescription(CliEpilog):
    """The opening of ``commtune --help`` (what commtune does, the main job), verbatim."""

    part = "description"


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("knobs-table", KnobsTable)
    app.add_directive("presets-table", PresetsTable)
    app.add_directive("cli-epilog", CliEpilog)
    app.add_directive("cli-description", CliDescription)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx directives that write tables from commtune's own registries at build time.

``{knobs-table}`` renders :data:`commtune.knobs.KNOBS` (and the two baselines),
``{presets-table}`` the network, intra-node and device presets, ``{cli-epilog}``
the accepted ranges that end ``commtune --help``, so the pages
never hold a copy that can go stale.
"""
from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _cell(text: object) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _list_table(header: list[str], rows: list[list[str]], widths: str = "auto") -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {_cell(row[0])}")
        lines.extend(f"     - {_cell(c)}" for c in row[1:])
    return lines


class _TableDirective(SphinxDirective):
    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(self.lines(), source="commtune_tables"), self.content_offset, container)
        return container.children


class KnobsTable(_TableDirective):
    """Every knob: name, flag, kind, default, accepted values, when it applies, meaning."""

    def lines(self) -> list[str]:
        from commtune.knobs import BASELINES, KNOBS

        rows = []
        for k in KNOBS.values():
            when = "always" if k.applies_when is None else f"``{k.applies_when[0]}`` = {', '.join(map(str, k.applies_when[1]))}"
            flag = f"``{k.flag}``" + (" / ``--flat``" if k.name == "hierarchical" else "")
            rows.append([f"``{k.name}``", flag, f"``{k.show(k.default)}``", k.accepted(), when, k.help])
        out = _list_table(["knob", "flag", "default", "accepted", "applies when", "meaning"], rows,
                          widths="14 12 8 16 12 38")
        out += ["", "Baselines every search reports:", ""]
        out += _list_table(["baseline", "knobs"],
                           [[f"``{name}``", knobs.describe()] for name, knobs in BASELINES.items()], widths="15 85")
        return out


class PresetsTable(_TableDirective):
    """Network presets (``--cluster NAME``), intra-node fabrics (``--intra``) and devices (``--device``)."""

    def lines(self) -> list[str]:
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
        out = _list_table(["network", "link per node", "per-stream cap", "latency", "device", "description"], nets,
                          widths="12 12 12 8 8 48")
        intra = [[f"``{n}``", d["bw"], d["latency"], d["description"]] for n, d in data["intra"].items()]
        out += [""] + _list_table(["intra-node fabric", "bandwidth", "latency", "description"], intra, widths="15 12 10 63")
        devices = [[f"``{n}``", ", ".join(f"{k} {v:g}" for k, v in d.tflops.items()), d.description]
                   for n, d in all_devices().items()]
        out += [""] + _list_table(["device", "effective TFLOP/s", "description"], devices, widths="10 35 55")
        return out


class CliEpilog(SphinxDirective):
    """The epilog of ``commtune --help`` (accepted ranges), verbatim."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from commtune.cli import build_parser

        text = build_parser().epilog or ""
        return [nodes.literal_block(text, text)]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("knobs-table", KnobsTable)
    app.add_directive("presets-table", PresetsTable)
    app.add_directive("cli-epilog", CliEpilog)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

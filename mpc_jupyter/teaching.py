"""What ``--explain`` and ``--shares`` show: the plan, and what the analyst really received.

:class:`Explanation` renders the committee's account of a plan (the text of
``site_agent.query.explain``: a header, then sections 1-4) as HTML: the SQL every site runs on
its own data, what it secret-shares, a table of MPC steps with rounds and bytes, and every
reveal point. A section this module cannot read is shown as preformatted text, never lost.

:class:`SharesView` shows a result beside the first words each committee member sent the
analyst: uniformly random 64-bit ring elements, meaningless alone. Member *i* holds
components *i* and *i+1* of a replicated sharing, so the three members together give
x0, x1, x2, and x0 + x1 + x2 mod 2^64 is the revealed value (counts directly; fixed point
and floats as their encoded parts).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

_SECTION = re.compile(r"^(\d)\. (.*)$")
_STEP = re.compile(r"^\s*(\S+)\s+(\d+) rounds\s+([\d,]+) B\s*(.*)$")
_ITEM = re.compile(r"^\s*(\[[^\]]+\]|[^:\[]+(?:\[[^\]]*\])?):\s*(.*)$")
_STYLE = (
    "<style>.mpc-explain table{border-collapse:collapse;margin:4px 0}"
    ".mpc-explain td,.mpc-explain th{padding:2px 8px;text-align:left;vertical-align:top}"
    ".mpc-explain pre{white-space:pre-wrap;margin:2px 0}"
    ".mpc-explain .reveal{background:#fff4d6}</style>"
)


@dataclass
class Explanation:
    """The committee's explanation of a plan; HTML in a notebook, text in a terminal."""

    text: str
    sections: dict[int, tuple[str, list[str]]] = field(init=False)
    header: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.header, self.sections = [], {}
        current: list[str] = self.header
        for line in self.text.splitlines():
            match = _SECTION.match(line)
            if match:
                current = []
                self.sections[int(match.group(1))] = (match.group(2), current)
            elif line.strip():
                current.append(line)

    @property
    def steps(self) -> list[dict[str, Any]]:
        """MPC steps: op, rounds, bytes and what the step does (the ``total`` row excluded)."""
        rows = []
        for line in self.sections.get(3, ("", []))[1]:
            match = _STEP.match(line)
            if match and match.group(1) != "total":
                op, rounds, size, words = match.groups()
                rows.append({"op": op, "rounds": int(rounds), "bytes": int(size.replace(",", "")), "what": words})
        return rows

    @property
    def reveals(self) -> list[str]:
        """Every reveal point, one line each."""
        return [line.strip() for line in self.sections.get(4, ("", []))[1]]

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)

    def _repr_html_(self) -> str:
        out = [_STYLE, '<div class="mpc-explain">']
        title, *query = self.header or [""]
        rest = [q for q in query if not q.startswith(("Cells:", "Minimum"))]
        notes = [q for q in query if q.startswith(("Cells:", "Minimum"))]
        out.append(f"<b>{html.escape(title)}</b><pre>{html.escape(_dedent(rest))}</pre>")
        out += [f"<div>{html.escape(n)}</div>" for n in notes]
        for number, (heading, lines) in sorted(self.sections.items()):
            out.append(f"<h4>{number}. {html.escape(heading)}</h4>")
            out.append(_section_html(number, lines, self))
        out.append("</div>")
        return "".join(out)


def _section_html(number: int, lines: list[str], explanation: Explanation) -> str:
    if number == 1:
        rows = [_ITEM.match(line) for line in lines]
        if all(rows):
            cells = "".join(
                f"<tr><td>{html.escape(m.group(1))}</td><td><pre>{html.escape(m.group(2))}</pre></td></tr>"
                for m in rows
                if m
            )
            return f"<table><tr><th>input</th><th>SQL each site runs on its own data</th></tr>{cells}</table>"
    if number == 2:
        items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in lines)
        return f"<ul>{items}</ul>"
    if number == 3 and explanation.steps:
        body = "".join(
            f"<tr><td>{html.escape(s['op'])}</td><td>{s['rounds']}</td><td>{s['bytes']:,}</td>"
            f"<td>{html.escape(s['what'])}</td></tr>"
            for s in explanation.steps
        )
        total = (sum(s["rounds"] for s in explanation.steps), sum(s["bytes"] for s in explanation.steps))
        return (
            "<table><tr><th>step</th><th>rounds</th><th>bytes</th><th>what happens</th></tr>"
            f"{body}<tr><th>total</th><th>{total[0]}</th><th>{total[1]:,}</th><th></th></tr></table>"
        )
    if number == 4:
        items = "".join(f'<li class="reveal">{html.escape(r)}</li>' for r in explanation.reveals)
        return f"<ol>{items}</ol>"
    return f"<pre>{html.escape(chr(10).join(lines))}</pre>"


def _dedent(lines: list[str]) -> str:
    indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    return "\n".join(line[indent:] for line in lines)


@dataclass
class SharesView:
    """A result beside the share words each committee member sent for it."""

    result: pd.DataFrame

    @property
    def members(self) -> dict[str, dict[str, Any]]:
        """Per member: the components it holds, their first words (hex) and the array size."""
        shares: dict[str, dict[str, Any]] = self.result.attrs.get("shares", {})
        return shares

    def reconstructed(self) -> list[int]:
        """x0 + x1 + x2 mod 2^64 of each previewed word, as signed 64-bit integers."""
        components: dict[int, list[int]] = {}
        for member in self.members.values():
            for index, words in zip(member["components"], member["words"], strict=True):
                components.setdefault(index, [int(w, 16) for w in words])
        if len(components) != 3:
            return []
        total = [sum(col) % 2**64 for col in zip(*components.values(), strict=True)]
        return [t - 2**64 if t >= 2**63 else t for t in total]

    def _repr_html_(self) -> str:
        table = self.result._repr_html_() if hasattr(self.result, "_repr_html_") else ""
        rows = "".join(
            f"<tr><td>{html.escape(site)}</td>"
            + "".join(
                f"<td>x{i}</td><td><code>{' '.join(words)}</code></td>"
                for i, words in zip(m["components"], m["words"], strict=True)
            )
            + "</tr>"
            for site, m in self.members.items()
        )
        sums = " ".join(str(v) for v in self.reconstructed())
        shares = (
            "<div><b>What each committee member sent you</b> (first words of its share array, hex)"
            f'<table style="font-size:85%">{rows}</table>'
            f"<div>x0 + x1 + x2 mod 2<sup>64</sup>, word by word: <code>{html.escape(sums)}</code></div>"
            '<div style="color:#666">One member\'s words alone are uniformly random; only the three '
            "together give the released values (counts as they are, other outputs as their "
            "fixed-point or floating-point encodings).</div></div>"
        )
        return f'<div style="display:flex;gap:2em;align-items:flex-start"><div>{table}</div>{shares}</div>'

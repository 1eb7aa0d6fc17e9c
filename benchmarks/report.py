"""Reports: tables of figures, printed as text or JSON, rendered as Markdown.

A benchmark builds one :class:`Report` of :class:`Table` s and calls :func:`emit`; with
``--json`` that prints one JSON object, which ``run_all`` turns back into a Report with
:func:`report_from_json` and renders with :func:`render_markdown`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    name: str
    title: str
    size: str
    repeat: int
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def render_text(report: Report) -> str:
    lines = [f"== {report.title} (size {report.size}, median of {report.repeat}) =="]
    for table in report.tables:
        cells = [table.columns, *[[fmt(v) for v in row] for row in table.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
        lines.append(f"-- {table.title}")
        for n, row in enumerate(cells):
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.extend(f"   {note}" for note in table.notes)
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    lines = [f"### {report.title}", ""]
    for table in report.tables:
        lines += [f"**{table.title}**", ""]
        lines.append("| " + " | ".join(table.columns) + " |")
        lines.append(
            "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + " |"
        )
        for row in table.rows:
            lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
        if table.notes:
            lines.append("")
    return "\n".join(lines)


def report_from_json(data: dict[str, Any]) -> Report:
    tables = [Table(**t) for t in data.pop("tables")]
    return Report(tables=tables, **data)


def emit(report: Report, as_json: bool) -> None:
    """Print the report: one JSON object, or the text tables."""
    report.machine = report.machine or machine_info()
    if as_json:
        print(json.dumps(asdict(report), default=str))
    else:
        print(render_text(report))


def machine_info() -> dict[str, Any]:
    import pyarrow

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
        "commit": commit or None,
    }

"""Reading the lab's page back as a browser and a reader would: its tags (do they
nest?), the cells of each table, its text, and its charts as parsed SVG with the
coordinates and scales drawn. Shared by the page's and the charts' tests."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "hr", "img", "input"}


class Structure(HTMLParser):
    """Records mismatched tags, the text of every table cell (a list of rows per table)
    and all the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.texts: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)


def structure_of(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def rows_by_mode(table: list[list[str]]) -> dict[str, dict[str, str]]:
    """Mode (the first cell) -> {column header: cell text}."""
    header, *rows = table
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def svgs_of(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    pairs = (p.split(",") for p in (polyline.get("points") or "").split())
    return [(float(x), float(y)) for x, y in pairs]


def path_runs(path: ET.Element) -> list[list[tuple[float, float]]]:
    """The runs of points of a ``<path d="M x,y L x,y ... M ...">``; a one-point run's
    ``h0`` (its dot) adds no point."""
    runs: list[list[tuple[float, float]]] = []
    for command in (path.get("d") or "").split():
        if command == "h0":
            continue
        x, y = (float(v) for v in command[1:].split(","))
        if command[0] == "M":
            runs.append([])
        runs[-1].append((x, y))
    return runs


def y_ticks(element: ET.Element) -> dict[str, float]:
    """Tick label -> y of the y-axis labels (right-aligned texts left of the plot)."""
    return {
        t.text or "": float(t.get("y") or "nan")
        for t in element.iter("text")
        if t.get("text-anchor") == "end" and t.get("dy") == "4"
    }


def baseline(element: ET.Element) -> float:
    (line,) = [e for e in element.iter("line") if e.get("class") == "baseline"]
    return float(line.get("y1") or "nan")


def group(element: ET.Element, css_class: str) -> ET.Element:
    """The one ``<g>`` of that class under ``element``."""
    (found,) = [g for g in element.iter("g") if g.get("class") == css_class]
    return found


def groups(element: ET.Element, css_class: str) -> list[ET.Element]:
    return [g for g in element.iter("g") if g.get("class") == css_class]

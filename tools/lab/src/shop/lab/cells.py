"""Table cells of the lab page: numbers formatted one way in every table, and rows of
cells with a class and a tooltip, all text escaped."""

from __future__ import annotations

from collections.abc import Sequence

from shop.lab.svg import escape

# (html content, CSS class, tooltip): content is markup already; the tooltip is text.
Cell = tuple[str, str, str]


def num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.{digits}f}"


def amount(value: float) -> str:
    """A rate or a capacity in prose: ``60``, ``62.5``; one decimal at most."""
    return f"{value:,.1f}".removesuffix(".0")


def cell(content: str, css_class: str, tooltip: str) -> str:
    attrs = f' class="{css_class}"' if css_class else ""
    attrs += f' title="{escape(tooltip)}"' if tooltip else ""
    return f"<td{attrs}>{content}</td>"


def table(columns: Sequence[str], rows: Sequence[Sequence[Cell]], css_class: str) -> str:
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(cell(*c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

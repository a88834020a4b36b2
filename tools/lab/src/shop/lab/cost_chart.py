"""What each mode costs, as one bar per mode: CPU seconds per 1,000 calls of the apps,
with the mode's proxies stacked on top, so the mesh's price is seen beside the others.

Drawn from the closed-loop run (``ModeCost``); modes without that record (an older
``lab.json``) get no bar, and the chart is left out when none has one.
"""

from __future__ import annotations

from collections.abc import Sequence

from shop.lab import svg
from shop.lab.results import ModeResult

WIDTH = 1040
MARGIN_LEFT = 150
MARGIN_RIGHT = 90
BAR_HEIGHT = 22
ROW = 32
TOP = 56
MARGIN_BOTTOM = 40
APPS_COLOR = svg.PALETTE[0]
PROXIES_COLOR = svg.PALETTE[1]
TITLE = "CPU seconds per 1,000 calls, closed loop"


def _costs(modes: Sequence[ModeResult]) -> list[tuple[str, float, float]]:
    """(mode, app CPU, proxy CPU) per mode with a cost record."""
    found = []
    for mode in modes:
        cost = mode.steady.cost
        if cost is None or cost.app_cpu_s_per_1000_calls is None:
            continue
        found.append(
            (mode.name, cost.app_cpu_s_per_1000_calls, cost.proxy_cpu_s_per_1000_calls or 0.0)
        )
    return found


def cost_chart_svg(modes: Sequence[ModeResult]) -> str:
    """The chart as inline SVG, or "" when no mode has a cost record."""
    costs = _costs(modes)
    if not costs:
        return ""
    top_value = max(apps + proxies for _, apps, proxies in costs)
    x_ticks = svg.ticks(top_value)
    x = svg.Linear(0.0, x_ticks[-1] or 1.0, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    bottom = TOP + ROW * len(costs)
    height = bottom + MARGIN_BOTTOM
    legend = svg.Legend.flow(
        [
            svg.LegendEntry("apps", APPS_COLOR, svg.BAR_SWATCH),
            svg.LegendEntry("proxies (service proxy, sidecars)", PROXIES_COLOR, svg.BAR_SWATCH),
        ],
        start=svg.text_width(TITLE, svg.FONT) + 40,
        left=MARGIN_LEFT,
        right=WIDTH - MARGIN_RIGHT,
    )
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        'data-chart="cost">',
        f"<title>{svg.escape(TITLE)}</title>",
        svg.text(0, 14, TITLE, svg.FONT, ' font-weight="600"'),
        *legend.svg(),
        *svg.vertical_grid(x, x_ticks, TOP - 6, bottom),
        svg.text(WIDTH - MARGIN_RIGHT, bottom + 32, "CPU s / 1,000 calls", svg.SMALL_FONT,
                 ' text-anchor="end"'),
    ]  # fmt: skip
    for row, (name, apps, proxies) in enumerate(costs):
        top = TOP + row * ROW
        low = top + BAR_HEIGHT
        middle = top + BAR_HEIGHT / 2 + 4
        parts.append(svg.text(MARGIN_LEFT - 8, middle, name, svg.FONT, ' text-anchor="end"'))
        bars = [_filled(x(0), x(apps), top, low, APPS_COLOR, f"{name}: apps {apps:.2f} s")]
        if proxies:
            title = f"{name}: proxies {proxies:.2f} s"
            bars.append(_filled(x(apps), x(apps + proxies), top, low, PROXIES_COLOR, title))
        parts.append(f'<g data-mode="{svg.escape(name)}" fill-opacity="0.45">{"".join(bars)}</g>')
        total = f"{apps + proxies:.2f}"
        parts.append(svg.text(x(apps + proxies) + 6, middle, total, svg.SMALL_FONT))
    parts.append("</svg>")
    return "\n".join(parts)


def _filled(left: float, right: float, top: float, bottom: float, color: str, title: str) -> str:
    return svg.bar(left, right, top, bottom, color, title).replace(
        "<rect ", f'<rect fill="{color}" ', 1
    )

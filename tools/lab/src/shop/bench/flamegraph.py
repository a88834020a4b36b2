"""A flame graph as a standalone SVG, drawn from collapsed stacks.

py-spy draws one itself, but only in place of the raw stacks the breakdown needs,
and a process can take one sampler at a time; so the bench records raw stacks and
draws the graph here. Root at the bottom, each frame as wide as its share of the
samples, coloured by the category :mod:`shop.bench.stacks` gives the frame itself
(grey: a frame no category names). Hovering a frame shows its full name, samples and
share. No script: any browser or viewer shows it as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from shop.bench.stacks import Category, Stack, frame_category

WIDTH = 1200.0
FRAME_HEIGHT = 16
HEADER = 48  # title and legend
FONT_SIZE = 11
CHAR_WIDTH = 6.2  # average width of a character at FONT_SIZE, for cutting labels
MIN_WIDTH = 0.3  # frames narrower than this many pixels are left out

COLOURS = {
    Category.GRPC: "#6fa8dc",
    Category.STORAGE: "#f6b26b",
    Category.TELEMETRY: "#c27ba0",
    Category.PROTOBUF: "#93c47d",
    Category.EVENT_LOOP: "#ffd966",
    Category.REST: "#e06666",
}
NEUTRAL = "#cccccc"


@dataclass
class _Node:
    samples: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[Stack, int]) -> _Node:
    root = _Node()
    for stack, samples in stacks.items():
        root.samples += samples
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node())
            node.samples += samples
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def _label(frame: str, width: float) -> str:
    """The frame's function name, cut to what fits in ``width`` pixels ('' if nothing)."""
    name = frame.split(" (", 1)[0] if not frame.startswith("thread (") else frame
    fits = int((width - 6) / CHAR_WIDTH)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def render_svg(stacks: Mapping[Stack, int], title: str) -> str:
    """The flame graph of ``stacks`` (frames root first -> samples) as SVG text."""
    root = _tree(stacks)
    levels = _depth(root)  # the root ("all") is one level
    height = HEADER + levels * FRAME_HEIGHT + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:g}" height="{height}" '
        f'viewBox="0 0 {WIDTH:g} {height}" font-family="monospace" font-size="{FONT_SIZE}">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="4" y="16" font-size="14">{escape(title)} ({root.samples:,} samples)</text>',
    ]
    x = 4.0
    for category, colour in (*COLOURS.items(), (None, NEUTRAL)):
        name = "other" if category is None else category.title
        parts.append(f'<rect x="{x:g}" y="26" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16:g}" y="36">{escape(name)}</text>')
        x += 16 + len(name) * CHAR_WIDTH + 14
    if root.samples > 0:
        scale = (WIDTH - 8) / root.samples
        bottom = height - 4

        def draw(name: str, node: _Node, left: float, level: int) -> None:
            width = node.samples * scale
            if width < MIN_WIDTH:
                return
            y = bottom - (level + 1) * FRAME_HEIGHT
            category = None if level == 0 else frame_category(name)
            colour = NEUTRAL if category is None else COLOURS[category]
            share = node.samples / root.samples * 100
            tip = f"{name} ({node.samples:,} samples, {share:.2f}%)"
            parts.append(
                f"<g><title>{escape(tip)}</title>"
                f'<rect x="{left:.2f}" y="{y}" width="{width:.2f}" '
                f'height="{FRAME_HEIGHT - 1}" fill={quoteattr(colour)} rx="2"/>'
            )
            label = _label(name, width)
            if label:
                parts.append(f'<text x="{left + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">')
                parts.append(f"{escape(label)}</text>")
            parts.append("</g>")
            offset = left
            for child_name, child in sorted(node.children.items()):
                draw(child_name, child, offset, level + 1)
                offset += child.samples * scale

        draw("all", root, 4.0, 0)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"

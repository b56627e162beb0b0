"""Charts of the health report: matplotlib's SVG backend, imported only by ``report``.

Each chart is drawn twice, in the readers' pages' light and dark colours, as inline
SVG with ``role="img"`` and a ``<title>``; the page shows the one of the reader's
scheme. Text stays text (``svg.fonttype='none'``) and ids are salted with a fixed
value, so the same figures give the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Colours:
    ink: str
    grid: str
    lines: tuple[str, ...]


# The readers' pages' colours (partials/brand.css.j2), light and dark.
SCHEMES = {
    "light": Colours("#1f2933", "#dfe5ec", ("#0b3d6e", "#8a1c1c", "#2f7d32", "#b26a00")),
    "dark": Colours("#e6ebf0", "#33414e", ("#8cc4ff", "#ffb4b4", "#a5d6a7", "#ffcc80")),
}
_MARKERS = ["o", "s", "^", "D"]


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    percent: bool = False,
    limit: float | None = None,
    limit_label: str = "",
) -> dict[str, str]:
    """One SVG per scheme: a line per series over ``labels`` (the issues, oldest first);
    ``limit`` draws a dashed line (a provider's complaint threshold)."""
    return {
        scheme: _draw(title, labels, series, percent, limit, limit_label, scheme)
        for scheme in SCHEMES
    }


def _draw(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    percent: bool,
    limit: float | None,
    limit_label: str,
    scheme: str,
) -> str:
    import matplotlib

    matplotlib.use("svg")  # no display, no Agg raster: SVG only
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    colours = SCHEMES[scheme]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mailer-report"}):
        figure = Figure(figsize=(7.2, 3.0), dpi=100)
        figure.patch.set_alpha(0)
        axes = figure.subplots()
        axes.set_facecolor("none")
        positions = list(range(len(labels)))
        for index, (name, values) in enumerate(series.items()):
            axes.plot(
                positions,
                [v * 100 if percent else v for v in values],
                label=name,
                color=colours.lines[index % 4],
                marker=_MARKERS[index % 4],
                linewidth=2,
            )
        if limit is not None:
            axes.axhline(
                limit * 100 if percent else limit,
                color=colours.lines[1],
                linestyle="--",
                linewidth=1,
            )
            axes.annotate(
                limit_label,
                (0, limit * 100 if percent else limit),
                color=colours.ink,
                fontsize=8,
                va="bottom",
            )
        # Many issues: every few labelled, slanted, so they never run together.
        step = max(1, len(labels) // 12)
        shown = [label if index % step == 0 else "" for index, label in enumerate(labels)]
        slanted = len(labels) > 6
        axes.set_xticks(
            positions,
            shown,
            rotation=45 if slanted else 0,
            ha="right" if slanted else "center",
            fontsize=8,
        )
        if percent:
            axes.yaxis.set_major_formatter(PercentFormatter(decimals=1))
        axes.set_ylim(bottom=0)
        axes.grid(axis="y", color=colours.grid)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            axes.spines[side].set_color(colours.grid)
        axes.tick_params(colors=colours.ink, labelsize=8)
        if len(series) > 1:
            legend = axes.legend(frameon=False, fontsize=8, labelcolor=colours.ink)
            legend.set_alpha(0)
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return _accessible(buffer.getvalue(), title)


def _accessible(svg: str, title: str) -> str:
    """Inline SVG with its name: ``role="img"``, a ``<title>``, no XML prologue."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<svg\b", f'<svg role="img" aria-label="{escape(title)}"', svg, count=1)
    return re.sub(r"(<svg[^>]*>)", rf"\1<title>{escape(title)}</title>", svg, count=1)

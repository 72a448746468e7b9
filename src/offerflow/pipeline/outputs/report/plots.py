"""The report's pictures: matplotlib figures rendered as inline SVG.

Each function draws one figure from figures already aggregated (counts, spans, or arrays it
bins itself) and returns the ``<svg>`` element, text kept as text. No script and no font is
referenced: the SVG needs nothing but the page it sits in. Figures are built on
:class:`matplotlib.figure.Figure` directly, never through pyplot's global state.

Matplotlib was chosen by measurement (``docs/architecture.md``, "The report"): on a
100,000-member run, the distributions grid takes about 0.3 s and 110 kB as SVG, where Bokeh
takes 1.2 s and 1.3 MB of HTML for the same grid, its JavaScript inlined.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from offerflow.pipeline.outputs.console import format_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Span",
    "boundary_chart",
    "dag_chart",
    "distributions_chart",
    "latency_chart",
    "ledger_chart",
    "offers_chart",
    "psi_chart",
    "timeline_chart",
]

Values = npt.NDArray[np.float64]
#: a task's time in the run: (task, start s, end s)
Span = tuple[str, float, float]

_STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,  # a grid line is drawn per tick: only the curves over time get one
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
#: member statuses and what they look like: ok green, unscored grey, failures warm
_STATUS_COLOURS = {
    "ok": "#2e7d32",
    "no_transactions": "#9e9e9e",
    "interrupted": "#5c6bc0",
    "model_error": "#c62828",
    "invalid_response": "#ef6c00",
    "endpoint_unavailable": "#ad1457",
}
_USED = "#2e7d32"
_REJECTED = ("#c62828", "#ef6c00", "#f9a825", "#8d6e63", "#ad1457", "#6d4c41", "#e57373")
_BAR_WIDTH = 0.6


@contextlib.contextmanager
def _figure(name: str, width: float, height: float) -> Iterator[Figure]:
    """A figure drawn in the report's style; its SVG ids salted by ``name``, so none repeat."""
    # imported at the first figure: matplotlib's import (0.6 s) would otherwise cost every
    # command that imports the pipeline, drawing or not
    import matplotlib as mpl
    from matplotlib.figure import Figure

    style: dict[Any, Any] = {**_STYLE, "svg.hashsalt": name, "svg.id": f"figure-{name}"}
    with mpl.rc_context(style):
        yield Figure(figsize=(width, height))


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def ledger_chart(rows: Mapping[str, int], members: Mapping[str, int]) -> str:
    """Rows as used or rejected by reason, members by status: one stacked bar each."""
    with _figure("ledgers", 10, 2.6) as fig:
        row_axes, member_axes = fig.subplots(2, 1)
        rejected = iter(_REJECTED * (1 + len(rows) // len(_REJECTED)))
        row_colours = [_USED if name == "used" else next(rejected) for name in rows]
        _stacked(row_axes, "rows", rows, row_colours)
        member_colours = [_STATUS_COLOURS.get(status, "#607d8b") for status in members]
        _stacked(member_axes, "members", members, member_colours)
        fig.subplots_adjust(left=0.08, right=0.72, top=0.88, bottom=0.12, hspace=0.9)
        return _svg(fig)


def _stacked(ax: Axes, label: str, parts: Mapping[str, int], colours: Sequence[str]) -> None:
    total = sum(parts.values())
    left = 0
    for (name, count), colour in zip(parts.items(), colours, strict=True):
        share = count / total if total else 0.0
        ax.barh(0, count, left=left, color=colour, label=f"{name}: {count:,} ({share:.1%})")
        left += count
    ax.set_title(f"{label}: {total:,}", loc="left")
    ax.set_yticks([])
    ax.set_xlim(0, max(total, 1))
    ax.grid(False)
    if parts:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))


def dag_chart(tasks: Mapping[str, Mapping[str, Any]], edges: Mapping[str, Sequence[str]]) -> str:
    """The workflow's tasks in layers by their longest path from a source, edges as arrows."""
    layer: dict[str, int] = {}
    graph = {name: [u for u in edges.get(name, ()) if u in tasks] for name in tasks}
    for name in TopologicalSorter(graph).static_order():
        layer[name] = max((layer[u] + 1 for u in graph[name]), default=0)
    columns: dict[int, list[str]] = {}
    for name in tasks:
        columns.setdefault(layer[name], []).append(name)
    depth = max((len(names) for names in columns.values()), default=1)
    position = {
        name: (float(x), (len(names) - 1) / 2 - i)
        for x, names in columns.items()
        for i, name in enumerate(names)
    }
    with _figure("dag", max(10.0, 2.0 * len(columns)), 1.0 + 1.1 * depth) as fig:
        ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
        ax.set_axis_off()
        boxes = {
            name: ax.text(
                x,
                y,
                _task_label(name, tasks[name]),
                ha="center",
                va="center",
                fontsize=7,
                bbox={"boxstyle": "round,pad=0.5", "facecolor": "#e3f2fd", "edgecolor": "#1565c0"},
            )
            for name, (x, y) in position.items()
        }
        for name, upstream in graph.items():
            for source in upstream:
                # from box to box: each arrow is clipped to the edges of the two boxes
                ax.annotate(
                    "",
                    xy=position[name],
                    xytext=position[source],
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#546e7a",
                        "patchA": boxes[source].get_bbox_patch(),
                        "patchB": boxes[name].get_bbox_patch(),
                        "connectionstyle": "arc3,rad=0.08",
                    },
                )
        ax.set_xlim(-0.6, max(columns, default=0) + 0.6)
        ax.set_ylim(-depth / 2 - 0.1, depth / 2 + 0.1)
        return _svg(fig)


def _task_label(name: str, task: Mapping[str, Any]) -> str:
    items = f"items {format_number(task.get('items_in'))} → {format_number(task.get('items_out'))}"
    if task.get("items_failed"):
        items += f", {format_number(task['items_failed'])} failed"
    p50, p99 = format_number(task.get("p50_ms")), format_number(task.get("p99_ms"))
    return "\n".join(
        [
            f"{name} ({task.get('kind', '?')})",
            items,
            f"{format_number(task.get('throughput'))}/s",
            f"p50 {p50} · p99 {p99} ms",
        ]
    )


def timeline_chart(
    spans: Sequence[Span],
    spans_from: str,
    rates: Mapping[str, tuple[Values, Values]],
    rates_from: str,
) -> str:
    """Each task's time in the run as a bar, and each endpoint's requests per second."""
    with _figure("timeline", 10, 1.6 + 0.28 * len(spans) + 2.2) as fig:
        gantt, throughput = fig.subplots(
            2, 1, height_ratios=(0.6 + 0.28 * len(spans), 2.2), squeeze=True
        )
        for i, (_, start, end) in enumerate(spans):
            gantt.barh(i, max(end - start, 1e-3), left=start, height=_BAR_WIDTH, color=f"C{i % 10}")
        gantt.set_yticks(range(len(spans)), [name for name, _, _ in spans])
        gantt.invert_yaxis()
        gantt.set_title(f"tasks over time ({spans_from})", loc="left")
        for name, (seconds, rate) in rates.items():
            throughput.plot(seconds, rate, label=name, linewidth=1)
        throughput.grid(axis="y")
        throughput.set_title(f"requests per second ({rates_from})", loc="left")
        throughput.set_xlabel("s")
        if rates:
            throughput.legend(loc="upper right")
        fig.subplots_adjust(left=0.12, right=0.98, top=0.95, bottom=0.08, hspace=0.45)
        return _svg(fig)


def latency_chart(
    latencies: Mapping[str, Values],
    retries: Mapping[str, tuple[Values, Values, Values]],
) -> str:
    """Per endpoint, a histogram of attempt latency with p50/p90/p99 marked; below, retries and
    errors over time (``retries``: endpoint → seconds, retries, errors per bin)."""
    count = max(len(latencies), 1)
    with _figure("latency", 10, 2.4 * ((count + 2) // 3) + 2.2) as fig:
        grid = fig.add_gridspec((count + 2) // 3 + 1, 3)
        for i, (name, values) in enumerate(latencies.items()):
            ax = fig.add_subplot(grid[i // 3, i % 3])
            positive = values[values > 0]
            if positive.size:
                bins = np.geomspace(positive.min(), positive.max() * 1.001, 50)
                counts, edges = np.histogram(positive, bins)
                ax.stairs(counts, edges, fill=True, alpha=0.7)
                ax.set_xscale("log")
                _plain_log(ax, "x", decades=float(np.log10(edges[-1] / edges[0])))
                marks = []
                for q, style, glyph in ((50, "-", "——"), (90, "--", "- -"), (99, ":", "····")):
                    value = float(np.percentile(positive, q))
                    ax.axvline(value, color="black", linestyle=style, linewidth=1)
                    marks.append(f"{glyph} p{q} {value:.3g} ms")
                # one text for the three marks: a legend costs several artists each
                ax.text(
                    0.98,
                    0.95,
                    "\n".join(marks),
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
                )
            ax.set_title(f"{name}: {values.size:,} attempts", loc="left")
            ax.set_xlabel("ms")
        ax = fig.add_subplot(grid[-1, :])
        for i, (name, (seconds, retried, failed)) in enumerate(retries.items()):
            ax.plot(seconds, retried, color=f"C{i}", linewidth=1, label=f"{name} retries")
            ax.plot(
                seconds, failed, color=f"C{i}", linewidth=1, linestyle="--", label=f"{name} errors"
            )
        ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
        ax.grid(axis="y")
        ax.set_title("retries and errors per second", loc="left")
        ax.set_xlabel("s from the first request")
        if any(r.any() or f.any() for _, r, f in retries.values()):
            ax.legend(loc="upper right", ncols=min(len(retries), 3))
        else:
            ax.text(0.5, 0.5, "no retries, no errors", transform=ax.transAxes, ha="center")
        fig.subplots_adjust(left=0.06, right=0.98, top=0.95, bottom=0.08, hspace=0.6, wspace=0.2)
        return _svg(fig)


def _plain_log(ax: Axes, which: Literal["x", "y"], decades: float = 2.0) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, … (over a few decades; else 1, 10, 100, …),
    without minor ticks: every tick costs."""
    ax.locator_params(axis=which, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,))
    (ax.xaxis if which == "x" else ax.yaxis).set_major_formatter("{x:g}")
    ax.minorticks_off()


def offers_chart(offers: Mapping[str, int]) -> str:
    """Members per offer type."""
    with _figure("offers", 6, 0.8 + 0.4 * max(len(offers), 1)) as fig:
        ax = fig.add_subplot()
        total = sum(offers.values())
        names = list(offers)
        bars = ax.barh(names, list(offers.values()), height=_BAR_WIDTH, color="#1565c0")
        ax.bar_label(bars, [f"{n:,} ({n / total:.1%})" for n in offers.values()], padding=3)
        ax.invert_yaxis()
        ax.set_xlim(0, max(offers.values(), default=1) * 1.3)
        fig.subplots_adjust(left=0.18, right=0.97, top=0.95, bottom=0.2)
        return _svg(fig)


def distributions_chart(
    columns: Mapping[str, Values], baseline: Mapping[str, Values] | None = None
) -> str:
    """A histogram of every column, its top 0.5% folded into the last bin; the baseline's on
    the same bins as an outline, when given."""
    rows = max((len(columns) + 3) // 4, 1)
    with _figure("distributions", 10, 1.9 * rows) as fig:
        for i, (name, values) in enumerate(columns.items()):
            ax = fig.add_subplot(rows, 4, i + 1)
            ax.set_title(_short(name), loc="left", fontsize=7)
            if values.size == 0:
                continue
            low, high = float(values.min()), float(np.quantile(values, 0.995))
            edges = np.linspace(low, high if high > low else low + 1, 41)
            counts, _ = np.histogram(np.clip(values, low, edges[-1]), edges)
            ax.stairs(counts / values.size, edges, fill=True, alpha=0.7, label="this run")
            other = None if baseline is None else baseline.get(name)
            if other is not None and other.size:
                counts, _ = np.histogram(np.clip(other, low, edges[-1]), edges)
                ax.stairs(counts / other.size, edges, color="black", linewidth=1, label="baseline")
            ax.tick_params(labelsize=6)
            ax.locator_params(nbins=4)
        if baseline is not None and columns:
            fig.axes[0].legend(loc="upper right", fontsize=6)
        fig.subplots_adjust(left=0.05, right=0.98, top=0.93, bottom=0.08, hspace=0.6, wspace=0.25)
        return _svg(fig)


def _short(name: str) -> str:
    return name.replace("TRANSACTIONS", "TXNS").replace("_PREDICTION", "")


def boundary_chart(ats: Values, resp: Values, threshold: float) -> str:
    """ATS against RESP as a 2-D histogram (log counts), with the offer boundary
    ``ats · resp = threshold`` drawn."""
    with _figure("boundary", 6, 4.2) as fig:
        ax = fig.add_subplot()
        x_max = float(np.quantile(ats, 0.995)) if ats.size else 1.0
        y_max = float(resp.max()) if resp.size else 1.0
        x_max, y_max = max(x_max, 1e-9), max(y_max, 1e-9)
        counts, _, _ = np.histogram2d(
            np.clip(ats, 0, x_max), np.clip(resp, 0, y_max), bins=60, range=((0, x_max), (0, y_max))
        )
        image = ax.imshow(
            np.ma.masked_equal(counts.T, 0),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=(0, x_max, 0, y_max),
            norm="log",
            vmin=1,
            vmax=max(2.0, float(counts.max())),
            interpolation="nearest",
        )
        colorbar = fig.colorbar(image, ax=ax, label="members")
        _plain_log(colorbar.ax, "y")
        y = np.linspace(max(threshold / x_max, y_max / 1000), y_max, 200)
        ax.plot(
            threshold / y, y, color="#d32f2f", linewidth=1.5, label=f"ats · resp = {threshold:g}"
        )
        ax.set_xlim(0, x_max)
        ax.set_ylim(0, y_max)
        ax.set_xlabel("ats prediction (top 0.5% folded in)")
        ax.set_ylabel("resp prediction")
        ax.legend(loc="upper right")
        ax.grid(False)
        fig.subplots_adjust(left=0.12, right=0.98, top=0.95, bottom=0.12)
        return _svg(fig)


def psi_chart(psi: Mapping[str, float], limit: float) -> str:
    """Each column's population stability index against the baseline, and the limit."""
    with _figure("psi", 10, 0.8 + 0.25 * max(len(psi), 1)) as fig:
        ax = fig.add_subplot()
        colours = ["#c62828" if value > limit else "#1565c0" for value in psi.values()]
        ax.barh(list(psi), list(psi.values()), height=_BAR_WIDTH, color=colours)
        ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"limit {limit:g}")
        ax.invert_yaxis()
        ax.set_xlabel("population stability index")
        ax.legend(loc="lower right")
        fig.subplots_adjust(left=0.3, right=0.98, top=0.97, bottom=0.8 / (1 + 0.25 * len(psi)))
        return _svg(fig)

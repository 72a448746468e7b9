"""``report.html``: one self-contained page that shows a run, optionally against a baseline run.

The page holds no script and loads nothing: its pictures are inline SVG
(:mod:`~offerflow.pipeline.outputs.report.plots`), its style is inline, and a
Content-Security-Policy forbids any fetch, so it opens offline, from a mail attachment or an
archive alike. It is drawn from aggregates (counts, bins, quantiles:
:mod:`~offerflow.pipeline.outputs.report.aggregates`), never from every row, so that its size
does not grow with the run. Each part is a ``<section>`` with a stable id (:data:`SECTIONS`).

What it reads from ``summary.json`` beyond the ledgers and task metrics, when present:

- ``dag``: ``{task: [upstream task, …]}``, the workflow's edges; without it the edges are
  derived from the tasks' kinds and order (:func:`~offerflow.pipeline.outputs.history.task_graph`);
- ``tasks.<name>.started_s`` / ``ended_s``: when each task started and ended, in seconds from the
  run's start; without them the timeline shows each endpoint from its first request to its
  last answer, from ``requests.parquet``;
- ``started_at``: the run's start (ISO 8601), the origin of the request-rate curves; without it
  they start at the first request.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from offerflow.pipeline.outputs.comparison import Comparison
from offerflow.pipeline.outputs.console import format_number as _number
from offerflow.pipeline.outputs.drift import compare_runs
from offerflow.pipeline.outputs.history import PastRun, read_run, task_graph
from offerflow.pipeline.outputs.report import aggregates, plots
from offerflow.pipeline.outputs.report.markup import clip as _clip
from offerflow.pipeline.outputs.report.markup import escape as _e
from offerflow.pipeline.outputs.report.markup import note as _note
from offerflow.pipeline.outputs.report.markup import seconds as _seconds
from offerflow.pipeline.outputs.report.markup import section as _section
from offerflow.pipeline.outputs.report.markup import table as _table
from offerflow.pipeline.outputs.sinks import FILE_MODE, atomic_write

__all__ = ["REPORT", "SECTIONS", "write_report"]

REPORT = "report.html"
#: the ids of the page's sections, in order; ``baseline`` only when a baseline is given
SECTIONS = (
    "header",
    "ledgers",
    "dag",
    "timeline",
    "latency",
    "offers",
    "distributions",
    "boundary",
    "rejects",
    "baseline",
)
#: the bundled offer model gives OFFER_2 when ats_prediction · resp_prediction reaches this
OFFER_BOUNDARY = 200.0
#: examples shown per reject reason, and reasons shown
_EXAMPLES, _REASONS = 3, 10

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#fafafa;color:#212121}
main{max-width:1100px;margin:auto;padding:1em 2em}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:1em 0;padding:.5em 1.2em}
h1{font-size:1.5em}h2{font-size:1.15em;margin:.6em 0}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.drift{color:#c62828;font-weight:bold}.note{color:#616161;font-size:12px}
svg{max-width:100%;height:auto}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def write_report(run_dir: Path, baseline: Path | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) and return its path.

    Meant for the end of a run as much as for a finished run directory; ``baseline`` adds a
    section comparing the run with that earlier run.
    """
    run = read_run(run_dir)
    base = None if baseline is None else read_run(baseline)
    comparison = None if base is None else compare_runs(base, run)
    requests = aggregates.attempts(run)
    columns = aggregates.value_arrays(run)
    sections = [
        _header(run),
        _ledgers(run),
        _dag(run),
        _timeline(run, requests),
        _latency(run, requests),
        _offers(run),
        _distributions(
            columns, None if base is None else aggregates.value_arrays(base, list(columns))
        ),
        _boundary(run),
        _rejects(run),
    ]
    if comparison is not None:
        sections.append(_baseline(comparison))
    title = f"offerflow run {run.run_id} — partner {run.partner}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main><h1>{_e(title)}</h1>\n" + "\n".join(sections) + "\n</main></body></html>\n"
    )
    path = run_dir / REPORT
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), mode=_mode(run_dir))
    return path


def _mode(run_dir: Path) -> int:
    """The mode of the run's other files (its ``output.file_mode``), or the default one."""
    for name in ("summary.json", "run.json"):
        with contextlib.suppress(FileNotFoundError):
            return stat.S_IMODE((run_dir / name).stat().st_mode)
    return FILE_MODE


# --- the sections --------------------------------------------------------------------------


def _header(run: PastRun) -> str:
    s = run.summary
    versions = ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items())
    status = f"{run.status} (exit {s.get('exit_code', '—')})"
    if s.get("error"):
        status += f": {s['error']}"
    rows = [
        ("partner", run.partner),
        ("run id", run.run_id),
        ("as of", run.as_of or "—"),
        ("status", status),
        ("config hash", s.get("config_hash", "—")),
        ("versions", versions or "—"),
        ("wall time", _seconds(s.get("wall_s"))),
        ("members per second", _number(s.get("members_per_s"))),
        ("peak memory", f"{_number(s.get('peak_rss_mb'))} MB"),
        ("sessions", f"{run.sessions}{' (resumed)' if run.sessions > 1 else ''}"),
        ("input", s.get("input", "—")),
        ("run directory", str(run.dir)),
    ]
    return _section("header", "Run", _table(("", ""), rows))


def _ledgers(run: PastRun) -> str:
    ledger = run.ledger
    reasons = dict(sorted((ledger.get("rejects_by_reason") or {}).items(), key=lambda kv: -kv[1]))
    rows = {"used": int(ledger.get("rows_used", 0)), **reasons}
    members = dict(ledger.get("members_by_status") or {})
    balanced = ledger.get("balanced")
    note = (
        f"rows in {_number(ledger.get('rows_in'))} = used + rejected; members in "
        f"{_number(ledger.get('members_in'))} = the sum by status"
        f"{'' if balanced is not False else ' — NOT BALANCED'}"
    )
    return _section("ledgers", "Ledgers", plots.ledger_chart(rows, members) + _note(note))


def _dag(run: PastRun) -> str:
    tasks = run.summary.get("tasks") or {}
    edges, source = task_graph(run.summary)
    header = (
        "task",
        "kind",
        "upstream",
        "in",
        "out",
        "failed",
        "wall s",
        "busy s",
        "items/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
    )
    rows = [
        (
            name,
            t.get("kind", ""),
            ", ".join(edges.get(name, ())),
            *(
                _number(t.get(k))
                for k in (
                    "items_in",
                    "items_out",
                    "items_failed",
                    "wall_s",
                    "busy_s",
                    "throughput",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "max_ms",
                )
            ),
        )
        for name, t in tasks.items()
    ]
    picture = plots.dag_chart(tasks, edges) if tasks else ""
    return _section("dag", "Workflow", picture + _note(f"edges: {source}") + _table(header, rows))


def _timeline(run: PastRun, requests: pl.DataFrame) -> str:
    tasks = run.summary.get("tasks") or {}
    spans: list[plots.Span] = [
        (name, float(t["started_s"]), float(t["ended_s"]))
        for name, t in tasks.items()
        if isinstance(t.get("started_s"), int | float) and isinstance(t.get("ended_s"), int | float)
    ]
    spans_from = "summary.json"
    origin = "s from the run's start" if aggregates.run_start(run) else "s from the first request"
    if not spans and requests.height:
        ends = requests.group_by("endpoint", maintain_order=True).agg(
            pl.col("t").min().alias("start"), (pl.col("t") + pl.col("latency_ms") / 1e3).max()
        )
        spans = [(str(e), float(a), float(b)) for e, a, b in ends.iter_rows()]
        spans_from = f"endpoints from requests.parquet, {origin}"
    width, bins = aggregates.per_bin(requests)
    rates = {
        e: (frame.get_column("bin").to_numpy(), frame.get_column("n").to_numpy() / width)
        for e, frame in bins.items()
    }
    picture = plots.timeline_chart(spans, spans_from, rates, f"{origin}, {width:g} s bins")
    return _section("timeline", "Timeline and throughput", picture)


def _latency(run: PastRun, requests: pl.DataFrame) -> str:
    endpoints = run.summary.get("endpoints") or {}
    latencies = {
        str(e): group.get_column("latency_ms").to_numpy()
        for (e,), group in requests.group_by("endpoint", maintain_order=True)
    }
    width, bins = aggregates.per_bin(requests)
    retries = {
        e: (
            f.get_column("bin").to_numpy(),
            f.get_column("retry").to_numpy() / width,
            f.get_column("failed").to_numpy() / width,
        )
        for e, f in bins.items()
    }
    rows = [
        (e, *(_number(f.get(k)) for k in ("requests", "errors", "retries")))
        for e, f in endpoints.items()
    ]
    picture = plots.latency_chart(latencies, retries) if latencies else _note("no requests")
    note = _note(
        "attempt latency from requests.parquet; the tasks' p50/p99 above count a "
        "member's whole time in the task, retries included"
    )
    return _section(
        "latency",
        "Endpoints",
        picture + note + _table(("endpoint", "requests", "errors", "retries"), rows),
    )


def _offers(run: PastRun) -> str:
    offers = dict(run.summary.get("offers_by_type") or {})
    body = plots.offers_chart(offers) if offers else _note("no offers")
    return _section("offers", "Offers by type", body)


def _distributions(
    columns: Mapping[str, plots.Values], baseline: Mapping[str, plots.Values] | None
) -> str:
    if not columns:
        return _section("distributions", "Features and predictions", _note("no offers table"))
    rows = [
        (name, _number(v.size), *(_number(float(q)) for q in np.quantile(v, (0.1, 0.5, 0.9))))
        if v.size
        else (name, "0", "—", "—", "—")
        for name, v in columns.items()
    ]
    note = "share of members per bin" + ("; black outline: the baseline" if baseline else "")
    body = plots.distributions_chart(columns, baseline) + _note(note)
    return _section(
        "distributions",
        "Features and predictions",
        body + _table(("column", "values", "p10", "median", "p90"), rows),
    )


def _boundary(run: PastRun) -> str:
    title = "ATS against RESP"
    scan = run.scan(run.offers)
    pair = ["ats_prediction", "resp_prediction"]
    if scan is None or not set(pair) <= set(scan.collect_schema().names()):
        return _section("boundary", title, _note("this run has no ats and resp predictions"))
    table = scan.select(pair).drop_nulls().collect()
    if table.height == 0:
        return _section("boundary", title, _note("no member has both predictions"))
    ats, resp = (table.get_column(c).cast(pl.Float64).to_numpy() for c in pair)
    note = _note(
        f"{table.height:,} scored members; the bundled offer model gives OFFER_2 at and "
        f"above the line, OFFER_1 below it"
    )
    return _section("boundary", title, plots.boundary_chart(ats, resp, OFFER_BOUNDARY) + note)


def _rejects(run: PastRun) -> str:
    reasons = sorted((run.ledger.get("rejects_by_reason") or {}).items(), key=lambda kv: -kv[1])
    body = _table(("reason", "rows"), [(r, _number(n)) for r, n in reasons[:_REASONS]])
    if reasons and run.rejects.is_file():
        top = [r for r, _ in reasons[:_REASONS]]
        examples = (
            pl.scan_csv(run.rejects, infer_schema=False)
            .filter(pl.col("reason").is_in(top))
            .group_by("reason", maintain_order=True)
            .head(_EXAMPLES)
            .collect()
        )
        examples = examples.select([*(c for c in examples.columns if c != "reason"), "reason"])
        cells = [tuple("" if v is None else _clip(str(v)) for v in row) for row in examples.rows()]
        body += _note(f"up to {_EXAMPLES} example rows per reason") + _table(
            tuple(examples.columns), cells
        )
    return _section("rejects", "Rejected rows", body or _note("no rejected rows"))


def _baseline(comparison: Comparison) -> str:
    b = comparison.baseline
    head = _note(
        f"against {b.run_id} (as of {b.as_of}), {b.dir}; limits from {comparison.limits_from}"
    )
    css = ' class="drift"' if comparison.drifted else ""
    verdict = f"<p{css}>{_e(comparison.verdict)}</p>"
    tables = "".join(_table(header, rows) for header, rows in comparison.tables())
    psi = plots.psi_chart({c.name: c.psi for c in comparison.columns}, comparison.limits.psi)
    return _section(
        "baseline",
        "Against the baseline",
        head + verdict + psi + tables,
    )

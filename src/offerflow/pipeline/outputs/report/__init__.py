"""``report.html``: the page that shows a run, its data, its markup and its pictures.

The report is the one part of the outputs that draws (HTML, matplotlib): kept together here,
apart from the tables and files a run writes and reads back.

- :mod:`~offerflow.pipeline.outputs.report.page`: the page and its sections, written atomically;
- :mod:`~offerflow.pipeline.outputs.report.aggregates`: a run's tables aggregated for the page;
- :mod:`~offerflow.pipeline.outputs.report.markup`: sections, tables and notes, text escaped;
- :mod:`~offerflow.pipeline.outputs.report.plots`: the pictures, matplotlib figures as SVG.
"""

from __future__ import annotations

from offerflow.pipeline.outputs.report.page import REPORT, SECTIONS, write_report

__all__ = ["REPORT", "SECTIONS", "write_report"]

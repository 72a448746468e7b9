"""Run directories written by hand, with just the files a test needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl


def write_run(
    run_dir: Path,
    *,
    summary: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
    offers: dict[str, list[Any]] | None = None,
    latencies: dict[str, list[float]] | None = None,
    log: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """A run directory: the given JSON files, an offers table, requests with these latencies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if manifest is not None:
        (run_dir / "run.json").write_text(json.dumps(manifest))
    if offers is not None:
        pl.DataFrame(offers).write_parquet(run_dir / "offers.parquet")
    if latencies is not None:
        start = datetime(2024, 1, 10, tzinfo=UTC)
        rows = [
            {
                "member_id": f"m{i}",
                "members": 1,
                "endpoint": endpoint,
                "attempt": 1,
                "status": 200,
                "started_at": start + timedelta(milliseconds=10 * i),
                "latency_ms": latency,
                "error": None,
            }
            for endpoint, values in latencies.items()
            for i, latency in enumerate(values)
        ]
        pl.DataFrame(rows, schema_overrides={"error": pl.String}).write_parquet(
            run_dir / "requests.parquet"
        )
    if log:
        records = [json.dumps({"level": "INFO", "message": message}) for message in log]
        (run_dir / "run.log").write_text("\n".join(records) + "\n")
    return run_dir

"""Past runs read back from their directories, and listed newest first."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from offerflow.errors import UsageError
from offerflow.pipeline import list_runs, read_run, runs_table, runs_text
from offerflow.pipeline.outputs import task_graph
from tests.pipeline.outputs.run_dirs import write_run

STARTED = "workflow 'offers:default': run started, 8 tasks"

#: the default partner's tasks, in the order its summary lists them
DEFAULT_TASKS = ("read", "features", "unscored", "ats", "resp", "offer_inputs", "offer", "record")
DEFAULT_EDGES = {
    "read": [],
    "features": ["read"],
    "unscored": ["read", "features"],
    "ats": ["features"],
    "resp": ["features"],
    "offer_inputs": ["ats", "resp"],
    "offer": ["offer_inputs"],
    "record": ["offer"],
}


def _manifest(run_id: str, created_at: str) -> dict[str, str]:
    return {"run_id": run_id, "partner": "default", "created_at": created_at}


def test_a_directory_without_summary_or_manifest_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a run directory"):
        read_run(tmp_path)


def test_an_unreadable_summary_is_named(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"summary\.json: unreadable"):
        read_run(tmp_path)


def test_a_run_without_a_summary_is_unfinished(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", manifest=_manifest("r", "2024-01-10T00:00:00Z")))
    assert (run.run_id, run.status, run.partner) == ("r", "unfinished", "default")
    assert runs_table([run])[0]["members"] is None


@pytest.mark.parametrize(
    ("summary", "log", "sessions"),
    [
        ({}, [], 1),
        ({}, [STARTED, "task read finished"], 1),
        ({}, [STARTED, "interrupted", STARTED], 2),
        ({"sessions": [{}, {}, {}]}, [STARTED], 3),  # the summary's list, when it has one
    ],
)
def test_a_run_was_resumed_when_it_took_more_than_one_session(
    tmp_path: Path, summary: dict[str, object], log: list[str], sessions: int
) -> None:
    run = read_run(write_run(tmp_path / "r", summary={"run_id": "r", **summary}, log=log))
    assert run.sessions == sessions
    assert runs_table([run])[0]["resumed"] is (sessions > 1)


def test_runs_are_listed_newest_first_per_partner(tmp_path: Path) -> None:
    for partner, run_id, created in [
        ("acme", "a1", "2024-01-01T00:00:00+00:00"),
        ("default", "d2", "2024-02-01T00:00:00+00:00"),
        ("default", "d1", "2024-01-15T00:00:00+00:00"),
    ]:
        write_run(tmp_path / partner / run_id, manifest=_manifest(run_id, created))
    (tmp_path / "default" / "not-a-run").mkdir()
    assert [r.run_id for r in list_runs(tmp_path)] == ["d2", "d1", "a1"]
    assert [r.run_id for r in list_runs(tmp_path, "default")] == ["d2", "d1"]
    assert list_runs(tmp_path / "nowhere") == []


def test_runs_text_shows_the_partner_only_when_there_are_several(tmp_path: Path) -> None:
    summary = {
        "run_id": "r1",
        "partner": "default",
        "status": "ok",
        "as_of": "2024-01-10T23:59:59+00:00",
        "ledger": {"members_in": 1200, "members_by_status": {"ok": 1070}},
        "offers_by_type": {"OFFER_1": 1013, "OFFER_2": 57},
        "wall_s": 0.61,
    }
    run = read_run(write_run(tmp_path / "r1", summary=summary))
    assert runs_text(runs_table([run])).splitlines() == [
        "run id  status  as of       members  ok     offers                     wall   resumed",
        "r1      ok      2024-01-10  1,200    1,070  OFFER_1 1,013, OFFER_2 57  0.6 s  no",
    ]
    other = read_run(write_run(tmp_path / "r2", summary={**summary, "partner": "acme"}))
    assert runs_text(runs_table([run, other])).splitlines()[0].split()[:3] == [
        "partner",
        "run",
        "id",
    ]


def test_a_table_written_as_a_directory_of_parts_is_scanned_whole(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", summary={"run_id": "r"}))
    run.offers.mkdir()
    for i, part in enumerate(([1.0, 2.0], [3.0])):
        pl.DataFrame({"x": part}).write_parquet(run.offers / f"part-{i:05}.parquet")
    scan = run.scan(run.offers)
    assert scan is not None
    assert scan.collect().get_column("x").sort().to_list() == [1.0, 2.0, 3.0]
    assert run.scan(run.requests) is None


def test_the_default_partners_edges_are_derived_from_its_tasks() -> None:
    summary = {"tasks": {name: {"kind": _kind(name)} for name in DEFAULT_TASKS}}
    assert task_graph(summary) == (
        DEFAULT_EDGES,
        "derived from the tasks' kinds (summary.json has no dag)",
    )


def test_one_model_feeds_the_offer_without_a_join() -> None:
    tasks = ("read", "features", "unscored", "ats", "offer", "record")
    edges, _ = task_graph({"tasks": {name: {"kind": _kind(name)} for name in tasks}})
    assert (edges["ats"], edges["offer"], edges["record"]) == (["features"], ["ats"], ["offer"])


def test_the_summarys_dag_wins() -> None:
    dag = {**DEFAULT_EDGES, "resp": ["ats"], "offer_inputs": ["resp"]}
    summary = {"tasks": {name: {"kind": _kind(name)} for name in DEFAULT_TASKS}, "dag": dag}
    assert task_graph(summary) == (dag, "summary.json")


def _kind(task: str) -> str:
    if task in ("read", "features", "unscored"):
        return "step"
    return "join" if task.endswith("_inputs") else "stream"

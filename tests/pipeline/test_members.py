"""MemberRows: members built from the features table, shared by parallel branches; statuses."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from offerflow.errors import EndpointError
from offerflow.pipeline.members import MemberRows, Status

TABLE = pl.DataFrame({"member_id": [f"m{i:03d}" for i in range(25)], "A": list(range(25))})


def test_every_row_becomes_a_member_in_order_with_its_features() -> None:
    members = list(MemberRows(TABLE, slice_rows=4))
    assert [m.member_id for m in members] == TABLE.get_column("member_id").to_list()
    assert [m.features for m in members] == [{"A": i} for i in range(25)]


def test_branches_in_step_share_the_same_member_objects() -> None:
    rows = MemberRows(TABLE, slice_rows=4)
    first, second = iter(rows), iter(rows)
    for _ in range(25):
        assert next(first) is next(second)


def test_a_branch_far_behind_gets_the_same_members_rebuilt() -> None:
    rows = MemberRows(TABLE, slice_rows=4)
    ahead = list(rows)
    behind = list(rows)
    assert [(m.member_id, m.features) for m in behind] == [(m.member_id, m.features) for m in ahead]
    assert behind[0] is not ahead[0]  # its slice was let go: built again, not kept forever


def test_a_stop_ends_every_branch_at_the_first_member_none_has_taken() -> None:
    stopping = False
    rows = MemberRows(TABLE, slice_rows=4, stop=lambda: stopping)
    first, second = iter(rows), iter(rows)
    taken = [next(first).member_id for _ in range(6)]
    stopping = True
    assert [m.member_id for m in second] == taken  # catches up, then stops with the first
    assert list(first) == []


def test_every_status_is_in_the_readme_and_every_endpoint_errors_status_is_one() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## When things go wrong", 1)[1]
    table = section[section.index("| status |") :].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)
    assert listed == [str(status) for status in Status]
    errors: list[type[EndpointError]] = [EndpointError, *_subclasses(EndpointError)]
    assert {Status(error.status) for error in errors} <= set(Status)


def _subclasses(cls: type[EndpointError]) -> list[type[EndpointError]]:
    direct = cls.__subclasses__()
    return [*direct, *(sub for each in direct for sub in _subclasses(each))]

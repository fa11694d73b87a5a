"""The migration planner (exchange.servers.migrations.pending), without a database: which steps
run, and which databases it refuses; and the released steps pinned by their checksums."""

from __future__ import annotations

import pytest

from exchange.database import STORED_TABLES
from exchange.servers.migrations import (
    Component,
    SchemaChanged,
    SchemaIncomplete,
    SchemaTooNew,
    checksum,
    pending,
)

THREE = Component.of(
    "things",
    [
        ("make things", "CREATE TABLE things (id int)"),
        ("name things", "ALTER TABLE things ADD COLUMN name text"),
        ("index names", "CREATE INDEX things_name ON things (name)"),
    ],
    ["things"],
)

# Every released step, by its checksum. A step, once released, ran on databases that recorded
# this checksum and refuse code whose step differs: never change a line here — add a step (and
# its line) instead.
RELEASED = {
    ("audit", 1): "04a9d1ff81ab4172b120a05738222c22a01f2c5618ca58a7553d7a64ab0518dd",
    ("audit", 2): "d0dd001db8419dcf2bf04705904361cf08ca4e003ffc99f810a7b2fc9cc9b007",
    ("audit", 3): "b132fdee8002f118b0bb0738971979fa32a0976eb2ac7a16bee613d8f4e52947",
    ("audit", 4): "969df065f15a4ca73cf1e441c30ccb7d2cca0dee6e6ef9df083d7436e093e73c",
    ("audit", 5): "a7d3779282999d9e615843df99e662690a335f86b260622aa53f4f758df2d73a",
    ("audit", 6): "0f4c52cd3cc98abea6269f0da5790afb7f8057eaf17fd0d82c09ab22c4c05ee0",
    ("audit", 7): "8afd1060298c281437627464ed1e22aabc19b13467bf3c519ea1fc94031e4a6f",
    ("audit", 8): "9c98f77bdf4c9eee2f711db527eac315437db3acde37a1588414543d93dacb83",
    ("audit", 9): "e458ca451912edfd6207154a2784e54b9abee55ffbdefd56445d351fda4408b8",
    ("consent", 1): "4de69f8f469c6b05ac5b31018f69871aa4d33bccc70712022e51bb5b6b389651",
    ("consent", 2): "4e8eea56b381d4135a7459796a4051da1339eeb604fc731e3bdc9d366f7612d5",
    ("consent", 3): "1c8228ba62d9bdb98fe04295bc9ebd87455564643944e6f685847533b3014b34",
    ("revocations", 1): "dbc671e9633627116439868bc8f51a3cdd72c2704aca3aa1c936a4711d647e76",
}


def recorded(component: Component, upto: int) -> dict[int, str]:
    return {s.version: s.checksum for s in component.steps[:upto]}


def test_steps_are_numbered_from_one_in_the_order_written() -> None:
    assert [(s.version, s.name) for s in THREE.steps] == [
        (1, "make things"),
        (2, "name things"),
        (3, "index names"),
    ]
    assert THREE.version == 3


def test_a_fresh_database_gets_every_step_and_a_current_one_none() -> None:
    assert pending(THREE, {}) == list(THREE.steps)
    assert pending(THREE, recorded(THREE, 1)) == list(THREE.steps[1:])
    assert pending(THREE, recorded(THREE, 3)) == []


def test_a_database_newer_than_the_code_is_refused_naming_both_versions() -> None:
    newer = recorded(THREE, 3) | {4: checksum("DROP TABLE things")}
    with pytest.raises(SchemaTooNew) as refused:
        pending(THREE, newer)
    assert refused.value.code == "schema.too_new"
    assert "'things'" in refused.value.message
    assert "version 4" in refused.value.message and "version 3" in refused.value.message


def test_a_step_whose_sql_changed_since_it_was_applied_is_refused() -> None:
    tampered = recorded(THREE, 2) | {1: checksum("CREATE TABLE things (id bigint)")}
    with pytest.raises(SchemaChanged) as refused:
        pending(THREE, tampered)
    assert refused.value.code == "schema.checksum_mismatch"
    assert "'things' schema version 1" in refused.value.message
    # The code's own step edited after release is the same mismatch, seen from the other side.
    edited = Component.of("things", [("make things", "CREATE TABLE things (id bigint)")], [])
    with pytest.raises(SchemaChanged):
        pending(edited, recorded(THREE, 1))


def test_a_gap_in_the_recorded_versions_is_refused() -> None:
    gap = recorded(THREE, 3)
    del gap[2]
    with pytest.raises(SchemaIncomplete, match="not version\\(s\\) 2"):
        pending(THREE, gap)


def test_the_checksum_covers_the_sql_exactly_and_not_the_name() -> None:
    renamed = Component.of("things", [("create the things table", THREE.steps[0].sql)], [])
    assert renamed.steps[0].checksum == THREE.steps[0].checksum
    assert checksum("CREATE TABLE things (id int)") != checksum("CREATE TABLE things  (id int)")


def test_released_steps_are_never_edited() -> None:
    steps = {(c.name, s.version): s.checksum for c in STORED_TABLES for s in c.steps}
    # Every released step is still there, exactly as released ...
    assert {k: steps.get(k) for k in RELEASED} == RELEASED
    # ... and a new step is pinned here in the commit that adds it.
    assert set(steps) == set(RELEASED)


def test_each_stored_component_names_its_tables_and_a_baseline_safe_to_rerun() -> None:
    assert len({c.name for c in STORED_TABLES}) == len(STORED_TABLES)
    for component in STORED_TABLES:
        baseline = component.steps[0].sql
        assert component.tables
        for table in component.tables:
            assert f"CREATE TABLE IF NOT EXISTS {table} (" in baseline
        # Adopting a database made before versions runs the baseline over its tables.
        assert "CREATE TABLE " not in baseline.replace("CREATE TABLE IF NOT EXISTS ", "")
        assert "CREATE INDEX " not in baseline.replace("CREATE INDEX IF NOT EXISTS ", "")

"""The one SQL-file loader: whole files, statements, named queries, file listings."""

from __future__ import annotations

import pytest

from tripflow.db import sqlfiles


def test_split_keeps_comments_with_their_statement() -> None:
    text = "-- first\nselect 1;\n\n-- second\nselect 2\nfrom x;\n-- trailing comment only\n"
    assert sqlfiles.split(text) == ["-- first\nselect 1;", "-- second\nselect 2\nfrom x;"]
    assert sqlfiles.split("select 1;\nselect 2") == ["select 1;", "select 2"]


def test_named_queries_of_every_sql_file_of_ours() -> None:
    status = sqlfiles.queries("cli", "status.sql")
    assert {"last_runs", "run_count", "unmapped_hot"} <= set(status)
    assert status["run_count"] == "select count(*) from tripflow.run_log"
    for folder, name in (("marts", "load.sql"), ("marts", "reconcile.sql"),
                         ("db", "catalog.sql"), ("processing", "silver.sql")):
        found = sqlfiles.queries(folder, name)
        assert found and all(sql and not sql.endswith(";") for sql in found.values()), name
        # A placeholder in a comment would count as one: none of ours has that.
        for sql in found.values():
            assert not any("%" in line for line in sql.splitlines()
                           if line.lstrip().startswith("--")), (name, sql)


def test_names_and_text() -> None:
    marts = sqlfiles.names("marts/sql", "mart_")
    assert "mart_session_analysis" in marts and "reconcile_traffic_minute" not in marts
    assert "GROUP BY" in sqlfiles.text("marts/sql", "mart_session_analysis.sql")
    with pytest.raises(FileNotFoundError):
        sqlfiles.text("marts/sql", "no_such_mart.sql")

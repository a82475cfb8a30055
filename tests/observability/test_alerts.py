"""Alerts to TRIPFLOW_ALERT_WEBHOOK, received by a local HTTP server: a failed `fail` check
and a breached freshness SLA each post one Slack-compatible message naming what failed,
where, the figure and the threshold; no secret (the webhook's URL, a DSN's password) ever
appears in the message or the command's output."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import SecretStr

from tests.kits import batchkit
from tripflow import orchestration
from tripflow.observability import alerts
from tripflow.settings import Settings

DAY = dt.date(2016, 3, 1)
TOKEN = "T000/B000/hushhush-webhook-token"  # the secret part of a Slack webhook URL


class Hook:
    """A local webhook: records every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append({"path": self.path, "type": self.headers["Content-Type"],
                                    "json": json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    found = Hook()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _password(dsn: str) -> str:
    password = urlsplit(dsn).password or ""
    assert len(password) >= 8, "the test database's DSN must hold a password"
    return password


def test_a_failed_check_posts_what_where_figure_and_threshold(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli, hook: Hook) -> None:  # type: ignore[no-untyped-def]
    # A mart row silver does not back: the daily totals check fails for that date.
    tripflow_cli("migrate", env=tripflow_env)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("insert into mart_daily_traffic (event_date, total_events, unique_sessions, "
                     "unique_documents, peak_hour) values (%s, 7, 1, 1, 9)", (DAY,))
    env = {**tripflow_env, "TRIPFLOW_ALERT_WEBHOOK": hook.url}
    result = tripflow_cli("quality", "--layer", "gold", env=env, check=False)
    assert result.returncode == 1
    assert len(hook.bodies) == 1
    got = hook.bodies[0]
    assert got["path"] == f"/services/{TOKEN}" and got["type"] == "application/json"
    message = got["json"]
    assert message["text"].startswith("tripflow quality: 2 checks failed (run ")
    sections = {b["text"]["text"].split(" — ")[0]: b for b in message["blocks"]
                if b["type"] == "section"}
    assert set(sections) == {"*gold.daily_totals_match_silver*", "*gold.hourly_sums_match_daily*"}
    totals = sections["*gold.daily_totals_match_silver*"]
    assert totals["text"]["text"].endswith("mart 7, silver 0")
    assert [f["text"] for f in totals["fields"]] == [
        f"*where*\ngold, {DAY}", "*observed*\n7", "*threshold*\n0"]
    everything = json.dumps(message) + result.stdout + result.stderr
    assert TOKEN not in everything and hook.url not in everything
    assert _password(settings.pg_dsn or "") not in everything


def test_a_breached_freshness_sla_posts_and_the_task_fails(settings: Settings,
                                                            hook: Hook) -> None:
    # Records wait in the topic while the hot path's last commit is two hours old.
    batchkit.produce(settings, [batchkit.record(batchkit.at(DAY, 9), "a" * 32, 1)] * 5,
                     partitions=1)
    from tripflow import db

    db.migrate(settings.pg_dsn)  # type: ignore[arg-type]
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("update tripflow.hot_state set last_commit_at = now() - interval '2 hours'")
    alerting = settings.model_copy(update={"alert_webhook": SecretStr(hook.url),
                                           "freshness_sla_seconds": 600.0})
    with pytest.raises(orchestration.FreshnessError, match="hot marts are stale"):
        orchestration.check_hot_freshness(settings=alerting)
    assert len(hook.bodies) == 1
    message = hook.bodies[0]["json"]
    assert message["text"].startswith("tripflow: hot marts stale: hot.freshness (hot path, "
                                      f"topic {settings.topic}): ")
    section = next(b for b in message["blocks"] if b["type"] == "section")
    fields = [f["text"] for f in section["fields"]]
    assert fields[0] == f"*where*\nhot path, topic {settings.topic}"
    assert 7_000 <= float(fields[1].split("\n")[1].replace(",", "")) <= 7_300  # ~2 h
    assert fields[2] == "*threshold*\n600"
    assert "5 records waiting" in section["text"]["text"]
    assert TOKEN not in json.dumps(message)


def test_secrets_are_scrubbed_and_a_dead_webhook_is_only_logged(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    password = _password(settings.pg_dsn or "")
    problem = alerts.Problem("hot.freshness", "hot path", 1200, 900,
                             f"cannot reach {settings.pg_dsn}; token=abc123 password={password}")
    message = json.dumps(alerts.message("stale", [problem]))
    assert password not in message and "abc123" not in message
    assert "://" in message and ":***@" in message and "token=***" in message
    # Nobody listens there: post() says so without the URL and returns False.
    dead = settings.model_copy(
        update={"alert_webhook": SecretStr(f"http://127.0.0.1:9/x/{TOKEN}")})
    with caplog.at_level("WARNING"):
        assert alerts.post(dead, "stale", [problem]) is False
    assert "alert webhook (TRIPFLOW_ALERT_WEBHOOK) failed" in caplog.text
    assert TOKEN not in caplog.text

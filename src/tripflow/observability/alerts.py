"""Alerts: a Slack-compatible JSON message to `TRIPFLOW_ALERT_WEBHOOK` when a quality check
of severity `fail` fails or the hot path's freshness SLA is breached.

The message is Slack's incoming-webhook form, `{"text": ..., "blocks": [...]}`: a summary
line and one section per problem with what failed, where (layer, date), the figure and the
threshold. It never holds a secret: the webhook URL (itself a secret) is never printed or
logged, and check details are scrubbed of anything that looks like a DSN password or key.
A webhook that fails is logged (without its URL) and never fails the step that alerted.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from tripflow.settings import Settings

log = logging.getLogger("tripflow.alerts")
TIMEOUT_S = 10.0
_MAX_SECTIONS = 20  # Slack allows 50 blocks per message
# user:password@ in URLs/DSNs, and password=/key=/token=/secret= pairs.
_SECRETS = (re.compile(r"(?<=://)([^:/@\s]+):[^@\s]+@"),
            re.compile(r"(?i)\b(password|passwd|pwd|secret|token|key)=\S+"))


@dataclass(frozen=True)
class Problem:
    """One thing an operator must know: what failed, where, the figure, the threshold."""

    what: str
    where: str
    observed: float | None
    threshold: float | None
    detail: str = ""


def scrub(text: str) -> str:
    """`text` without credentials (a DSN's password, key=value secrets)."""
    text = _SECRETS[0].sub(lambda m: f"{m.group(1)}:***@", text)
    return _SECRETS[1].sub(lambda m: f"{m.group(1)}=***", text)


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def message(title: str, problems: list[Problem]) -> dict:
    """The Slack-compatible payload."""
    lines = "; ".join(f"{p.what} ({p.where}): {_figure(p.observed)} > "
                      f"{_figure(p.threshold)}" for p in problems[:_MAX_SECTIONS])
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text",
                                                       "text": scrub(title)[:150]}}]
    for p in problems[:_MAX_SECTIONS]:
        blocks.append({
            "type": "section",
            "text": {"type": "mrkdwn", "text": scrub(f"*{p.what}* — {p.detail}")[:3000]},
            "fields": [{"type": "mrkdwn", "text": f"*where*\n{scrub(p.where)}"},
                       {"type": "mrkdwn", "text": f"*observed*\n{_figure(p.observed)}"},
                       {"type": "mrkdwn", "text": f"*threshold*\n{_figure(p.threshold)}"}],
        })
    if len(problems) > _MAX_SECTIONS:
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn", "text": f"… and {len(problems) - _MAX_SECTIONS} more"}]})
    return {"text": scrub(f"{title}: {lines}"), "blocks": blocks}


def post(settings: Settings, title: str, problems: Iterable[Problem]) -> bool:
    """Post the problems to the webhook, if one is set; True when it was delivered."""
    found = list(problems)
    if settings.alert_webhook is None or not found:
        return False
    body = json.dumps(message(title, found)).encode()
    request = urllib.request.Request(settings.alert_webhook.get_secret_value(), data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            reply.read()
        return True
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as err:
        # The error's text may quote the URL: only its type and status are logged.
        status = getattr(err, "code", "")
        log.warning("alert webhook (TRIPFLOW_ALERT_WEBHOOK) failed: %s %s; the alert was: %s",
                    type(err).__name__, status, title)
        return False


def quality_problems(report: object) -> list[Problem]:
    """Failed checks of severity `fail`, and a breached freshness SLA (`hot.freshness`),
    from a QualityReport: the per-date rows where a check has them, else its summary."""
    results = [r for r in report.results  # type: ignore[attr-defined]
               if not r.passed and (r.severity == "fail" or r.check == "hot.freshness")]
    dated = {r.check for r in results if r.event_date is not None}
    return [Problem(r.check, f"{r.layer}" + (f", {r.event_date}" if r.event_date else ""),
                    r.observed, r.threshold, r.detail)
            for r in results if r.event_date is not None or r.check not in dated]


def alert_quality(settings: Settings, report: object) -> bool:
    """Post a QualityReport's failures, if any."""
    problems = quality_problems(report)
    return post(settings, f"tripflow quality: {len({p.what for p in problems})} checks "
                f"failed (run {report.run_id})", problems)  # type: ignore[attr-defined]

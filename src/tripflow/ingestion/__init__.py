"""Ingestion: replay TripClick log files into the raw-log topic (producer, replay
clock, topic admin). `produce` is the one entry the CLI and the demo call; Airflow's
replay splits a run per web server with `plan_replay` and `replay_server`.

Names are imported on first use: a producer server process starts from
`tripflow.ingestion.server` and should not pay for the reader's imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tripflow.ingestion.admin import (
        BrokerUnreachable,
        IngestionError,
        TopicInfo,
        ensure_topic,
    )
    from tripflow.ingestion.plan import plan_replay, replay_server
    from tripflow.ingestion.producer import Mode, ProduceProgress, ProduceSummary, produce
    from tripflow.ingestion.replay import ReplayAnchor

_HOME = {
    "BrokerUnreachable": "tripflow.ingestion.admin",
    "IngestionError": "tripflow.ingestion.admin",
    "TopicInfo": "tripflow.ingestion.admin",
    "ensure_topic": "tripflow.ingestion.admin",
    "Mode": "tripflow.ingestion.producer",
    "ProduceProgress": "tripflow.ingestion.producer",
    "ProduceSummary": "tripflow.ingestion.producer",
    "produce": "tripflow.ingestion.producer",
    "ReplayAnchor": "tripflow.ingestion.replay",
    "plan_replay": "tripflow.ingestion.plan",
    "replay_server": "tripflow.ingestion.plan",
}

__all__ = [
    "BrokerUnreachable",
    "IngestionError",
    "Mode",
    "ProduceProgress",
    "ProduceSummary",
    "ReplayAnchor",
    "TopicInfo",
    "ensure_topic",
    "plan_replay",
    "produce",
    "replay_server",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

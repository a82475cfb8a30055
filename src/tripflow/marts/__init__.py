"""Cold marts: SQL files (`sql/`), the engine that runs them over silver (`engine`), the
PostgreSQL load (`load`), reconciliation of the hot traffic-minute mart (`reconcile`), the
`allarticles.txt` catalogue (`articles`) and the entry points (`run`)."""

from tripflow.marts.run import BackfillSummary, MartsSummary, backfill, mart_row_counts, run_marts

__all__ = ["BackfillSummary", "MartsSummary", "backfill", "mart_row_counts", "run_marts"]

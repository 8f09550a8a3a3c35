"""Store rows for tests that need decisions without running a backtest or a daemon.

::

    from otonom_runtime.testing.rows import add_hold_decisions

    run_id = add_hold_decisions(session, [(symbol_id, "live_x", day), (other_id, None, day)])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy.orm import Session

from otonom_runtime.store import BacktestRun, Decision

__all__ = ["add_hold_decisions"]


def add_hold_decisions(session: Session, rows: Iterable[tuple[int, str | None, dt.date]]) -> int:
    """One run row and, per ``(symbol_id, live_strategy, date)``, a HOLD decision of strength 0
    from a flat portfolio (``live_strategy`` None: a backtest row, else a live one of that
    strategy); returns the run's id. Flushed, not committed."""
    rows = list(rows)
    days = [date for _, _, date in rows]
    run = BacktestRun(strategy_name="s", strategy_hash="h", params={},
                      start_date=min(days), end_date=max(days))  # fmt: skip
    session.add(run)
    session.flush()
    flat = {"action": 0, "strength": 0.0, "position": 0.0, "leverage": 0.0,
            "cash_fraction": 1.0, "days_since_last_trade": 1.0, "equity": 1e4}  # fmt: skip
    session.add_all(
        Decision(run_id=run.id, symbol_id=sid, date=date, live_strategy=strategy, **flat)
        for sid, strategy, date in rows
    )
    session.flush()
    return int(run.id)

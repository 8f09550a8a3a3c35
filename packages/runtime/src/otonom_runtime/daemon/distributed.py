"""The decision tick spread over a Dask cluster (the optional extra ``distributed``:
``pip install "otonom-runtime[distributed]"``), for a universe larger than one machine.

``run_tick_distributed(client, url, strategy_path, symbols)`` splits the universe into
partitions (``partition``: contiguous slices, in the order given) and submits one Dask task per
partition; each task runs the ordinary tick (``run_tick``: batched reads, the vectorised
analysts, ``predict_batch``, one transaction) for its symbols against the shared store at
``url`` (PostgreSQL; each worker process opens its own engine) and returns its
``TickReport``; the reports are gathered and merged in partition order. Each worker loads the
strategy and its model once (``Ensemble.from_strategy``, kept per worker process with its
``ModelWatch``, which hot-reloads a newly promoted model before each task, as the one-process
daemon does between ticks). Dask schedules; nothing here is a scheduler.

The decisions are the one-process tick's: every symbol's sleeve gets the capital of the whole
universe's split (``initial_capital / len(symbols)``, ``UniverseBroker``), not its
partition's, and the live key makes each decision once whichever worker writes it. A
partition's tick commits on its own (its own run row); a partition that fails or conflicts
leaves the others' decisions recorded and is decided by the next tick.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from otonom_runtime._errors import DaemonError
from otonom_runtime.daemon.loop import TickReport, run_tick
from otonom_runtime.daemon.paper import PaperBroker
from otonom_runtime.daemon.reload import ModelWatch
from otonom_runtime.daemon.rows import Holding, Holdings
from otonom_runtime.daemon.tick import Ensemble, TickDecision

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "LOCAL_PREFIX",
    "DaskTick",
    "UniverseBroker",
    "connect",
    "partition",
    "run_tick_distributed",
]

LOCAL_PREFIX: Final = "local:"
"""``--dask-scheduler local:N``: a local cluster of N worker processes, one thread each."""
_ENSEMBLES: dict[tuple[str, bool | None], tuple[Ensemble, ModelWatch, UniverseBroker]] = {}
_LOCK = threading.Lock()


class UniverseBroker(PaperBroker):
    """The paper broker with each symbol's sleeve sized by the whole universe
    (``initial_capital / universe``), whichever partition of it a tick decides; ``universe``
    may be set between ticks (a worker's broker serves partitions of any size)."""

    def __init__(self, universe: int = 1) -> None:
        super().__init__()
        self.universe = universe

    @property
    def universe(self) -> int:
        return self._universe

    @universe.setter
    def universe(self, value: int) -> None:
        if value < 1:
            raise DaemonError(f"universe of {value} symbols; expected at least one")
        self._universe = value

    def holdings(self, *args: Any, **kwargs: Any) -> Holdings:
        """``PaperBroker.holdings`` with its last two arguments, ``params`` and ``capital``
        (``run_tick``'s share of the partition), given the universe's share instead."""
        *head, params, _ = args
        share = params.initial_capital / self.universe
        paper: Any = super()  # either form of Broker.holdings: (..., params, capital)
        out: Holdings = paper.holdings(*head, params, share, **kwargs)
        return out


def partition(symbols: Sequence[str], parts: int) -> list[list[str]]:
    """``symbols`` (duplicates dropped) in at most ``parts`` contiguous slices of sizes that
    differ by one at most, in the order given; no empty slice."""
    names = list(dict.fromkeys(symbols))
    if parts < 1:
        raise DaemonError(f"{parts} partitions; expected at least one")
    parts = min(parts, len(names))
    size, extra = divmod(len(names), parts) if parts else (0, 0)
    out, start = [], 0
    for k in range(parts):
        stop = start + size + (k < extra)
        out.append(names[start:stop])
        start = stop
    return out


def _worker_ensemble(strategy_path: str, use_rl: bool | None) -> tuple[Ensemble, UniverseBroker]:
    """The ensemble and paper broker of this worker process, made at its first task; later
    tasks reuse them after the hot reload's check (``ModelWatch.check``)."""
    key = (str(Path(strategy_path).resolve()), use_rl)
    with _LOCK:
        if key not in _ENSEMBLES:
            ensemble = Ensemble.from_strategy(strategy_path, use_rl=use_rl)
            _ENSEMBLES[key] = (ensemble, ModelWatch(ensemble), UniverseBroker())
        ensemble, watch, broker = _ENSEMBLES[key]
    watch.check()
    return ensemble, broker


def _tick_partition(
    symbols: list[str],
    url: str,
    strategy_path: str,
    universe: int,
    as_of: dt.date | None,
    use_rl: bool | None,
) -> tuple[TickReport, list[float]]:
    """One Dask task: the tick of ``symbols`` in this worker, its own session and
    transaction; returns the report and the policy latencies it measured (ms)."""
    from otonom_runtime.store import get_session

    ensemble, broker = _worker_ensemble(strategy_path, use_rl)
    broker.universe = universe
    ensemble.latencies_ms.clear()  # this task's calls only (the daemon keeps the window)
    with get_session(url) as session:
        report = run_tick(session, ensemble, symbols, broker, as_of=as_of)
    return report, list(ensemble.latencies_ms)


def _merge(reports: Sequence[TickReport]) -> TickReport:
    """The partitions' reports as one, in partition order (``run_id``: the smallest id
    written; ``conflict``: any partition's)."""
    ids = [r.run_id for r in reports if r.run_id is not None]
    merged = TickReport(min(ids) if ids else None)
    decisions: list[TickDecision] = []
    holdings: list[Holding] = []
    for r in reports:
        decisions += r.decisions  # each partition's items made here (a report's are lazy)
        holdings += r.holdings
        merged.up_to_date += r.up_to_date
        merged.no_bars += r.no_bars
        merged.warming_up += r.warming_up
        merged.fallbacks += r.fallbacks
        merged.conflict = merged.conflict or r.conflict
    merged.decisions, merged.holdings = decisions, holdings
    return merged


def run_tick_distributed(
    client: Any,
    url: str,
    strategy_path: str | os.PathLike[str],
    symbols: Sequence[str],
    *,
    partitions: int | None = None,
    as_of: dt.date | None = None,
    use_rl: bool | None = None,
) -> tuple[TickReport, list[float]]:
    """One tick of ``symbols`` on the Dask cluster of ``client`` (see the module docstring):
    ``partitions`` tasks (None: one per worker), each deciding its slice against the store
    at ``url``. Returns the merged ``TickReport`` and the workers' policy latencies (ms).
    A task's error is raised here (the partitions that committed stay committed)."""
    names = list(dict.fromkeys(symbols))
    if not names:
        raise DaemonError("no symbols given; expected at least one")
    workers = len(client.scheduler_info()["workers"]) or 1
    slices = partition(names, partitions or workers)
    futures = client.map(
        _tick_partition,
        slices,
        url=url,
        strategy_path=os.fspath(strategy_path),
        universe=len(names),
        as_of=as_of,
        use_rl=use_rl,
        pure=False,
    )
    results: list[tuple[TickReport, list[float]]] = client.gather(futures)
    return _merge([r for r, _ in results]), [ms for _, lat in results for ms in lat]


class DaskTick:
    """``run_daemon``'s tick on a Dask cluster: called as ``run_tick`` is (the session is
    not used: each task opens its own), it runs ``run_tick_distributed`` and adds the
    workers' fallbacks and latencies to the daemon's ``ensemble`` (its state row)."""

    def __init__(
        self,
        client: Any,
        url: str,
        strategy_path: str | os.PathLike[str],
        *,
        use_rl: bool | None = None,
        partitions: int | None = None,
    ) -> None:
        self.client, self.url, self.strategy_path = client, url, os.fspath(strategy_path)
        self.use_rl, self.partitions = use_rl, partitions

    def __call__(
        self,
        session: Session,
        ensemble: Ensemble,
        symbols: Sequence[str],
        broker: Any,
        *,
        as_of: dt.date | None = None,
    ) -> TickReport:
        report, latencies = run_tick_distributed(
            self.client, self.url, self.strategy_path, symbols,
            partitions=self.partitions, as_of=as_of, use_rl=self.use_rl,
        )  # fmt: skip
        ensemble.fallbacks += report.fallbacks
        ensemble.latencies_ms.extend(latencies)
        return report


def connect(address: str) -> tuple[Any, Any]:
    """A Dask client of the scheduler at ``address`` (``tcp://host:8786``), or with
    ``local:N`` of a new local cluster of N worker processes (one thread each, no
    dashboard); returns the client and the cluster it made (None for an address). Close
    both (``client.close()``, ``cluster.close()``). ``DaemonError`` without the extra."""
    try:  # Dask's API is untyped: used through Any
        dask: Any = importlib.import_module("distributed")
    except ImportError:
        raise DaemonError(
            "--dask-scheduler needs Dask's distributed package; expected it installed: "
            'pip install "otonom-runtime[distributed]"'
        ) from None
    if not address.startswith(LOCAL_PREFIX):
        try:
            return dask.Client(address, timeout="30s"), None
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            raise DaemonError(
                f"cannot reach the Dask scheduler at {address!r}: {exc}; expected a running "
                "scheduler (tcp://host:8786) or local:N"
            ) from None
    count = address[len(LOCAL_PREFIX) :]
    if not count.isdigit() or int(count) < 1:
        raise DaemonError(f"--dask-scheduler {address!r}; expected local:N with N >= 1")
    cluster = dask.LocalCluster(
        n_workers=int(count), threads_per_worker=1, processes=True, dashboard_address=None
    )
    return dask.Client(cluster), cluster

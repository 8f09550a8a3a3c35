"""``TradingEnv``: a gymnasium environment over one symbol's bars in the store, trading with
the backtester's fills and costs (``otonom_runtime.backtest.SleeveEpisode``).

Rules (each one tested):

* **The backtester's own parts.** The inputs are read by the backtester's reader
  (``otonom_runtime.backtest.episode_inputs``), each day's state is the day's market features
  (``otonom_schema``'s causal feature maths, as the backtester and the live builder compute
  them) with the sleeve's portfolio columns, and a step drives the backtester's sleeve (the
  one body of its mark, fill and cost rules) by one decision. Nothing here computes a feature
  or a fill: for the actions and strengths of a backtest's ``Decision`` rows, the
  observations are the offline dataset's states of that run (float32, bit for bit) and the
  rewards sum to the run's ``total_return``.
* **Observation**: the day's 34 floats (float32), in a ``Box`` of the schema's feature bounds
  (widened by its ``RANGE_TOLERANCE``, as its validation is); decided at the close, filled at
  the next open.
* **Action**: ``Discrete(3)``, ``otonom_schema.Action`` (0 HOLD, 1 BUY, 2 SELL). The
  strength is not part of the action (stable-baselines3 has no mixed discrete and continuous
  space): ``strength`` is either a fixed number in [0, 1] (with ``confidence``, the vote's
  confidence in ``"voter"`` mode) or a function of the day and its state giving ``(strength,
  confidence)``; ``bc_strength(policy)`` is the cloned policy's strength and top probability
  for the state, as the RL analyst votes with them.
* **Mode** (``otonom_runtime.backtest.EPISODE_MODES``, the strategy's RL deployment modes,
  ``ensemble.rl_policy.mode``, applied by the one vote, ``otonom_runtime.vote``):
  ``"sole"``, the action is the decision; ``"voter"`` (today's deployment), the action is the
  4th analyst's vote, decided with the strategy's three analysts; ``"filter"``, the three
  analysts decide and the action vetoes or sizes their BUY/SELL (the strategy's
  ``filter_veto`` and ``filter_size``); None: the strategy's own mode.
* **Reward**: the change of the sleeve's equity over the step (marked at the closes, after
  slippage and commission) divided by its starting equity, so an episode's rewards sum to
  the backtest's total return. An episode of N decision days has N - 1 steps and ends
  (``terminated``) on the last day, whose decision would never be filled.
* **Lazy.** gymnasium is imported when an environment is made: ``TradingEnv(...)`` gives an
  instance of a subclass of ``TradingEnv`` and ``gymnasium.Env`` made on first use.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt

from otonom_runtime.backtest import EPISODE_MODES, EpisodeInputs, SleeveEpisode, episode_inputs
from otonom_schema import FEATURES, RANGE_TOLERANCE, STATE_DIM
from otonom_trainer.rl.options import RlError

if TYPE_CHECKING:
    from otonom_runtime.policy import RlPolicy
    from otonom_runtime.strategy import StrategyConfig

__all__ = ["RlError", "StrengthFn", "TradingEnv", "bc_strength", "load_trading_env"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
StrengthFn = Callable[[int, F64], tuple[float, float]]
"""``(day, state) -> (strength, confidence)``: the strength and vote confidence of the day's
decision; ``day`` counts the episode's decision days from 0, ``state`` is float64."""
_N_ACTIONS: Final = 3


class TradingEnv:
    """A gymnasium environment over ``inputs`` (``episode_inputs``; see the module
    docstring). ``mode``: one of ``EPISODE_MODES`` (voter, sole, filter) or None (the
    strategy's); ``strength``: a number in [0, 1] or a ``StrengthFn``; ``confidence``: the
    vote's confidence with a fixed strength."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __new__(cls, *args: Any, **kwargs: Any) -> TradingEnv:
        del args, kwargs
        target = _gym_class() if cls is TradingEnv else cls
        return object.__new__(target)

    def __init__(
        self,
        inputs: EpisodeInputs,
        *,
        mode: str | None = "sole",
        strength: float | StrengthFn = 1.0,
        confidence: float = 1.0,
    ) -> None:
        from gymnasium import spaces

        if mode is not None and mode not in EPISODE_MODES:
            raise RlError(f"mode is {mode!r}; expected one of {', '.join(EPISODE_MODES)}")
        if not callable(strength):
            for name, value in (("strength", strength), ("confidence", confidence)):
                if not 0.0 <= float(value) <= 1.0:
                    raise RlError(f"{name} is {value!r}; expected a number in [0, 1]")
        self.inputs = inputs
        self.strength = strength
        self.confidence = float(confidence)
        self.episode = SleeveEpisode(inputs, mode=mode)
        self.mode = self.episode.mode
        low, high = _bounds()
        self.observation_space = spaces.Box(low, high, (STATE_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(_N_ACTIONS)
        self.render_mode = None
        self._state: F64 | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[F32, dict[str, Any]]:
        """Day 0's observation and info (the episode is deterministic: ``seed`` only seeds
        gymnasium's ``np_random``)."""
        del options
        if seed is not None:
            from gymnasium.utils import seeding

            self._np_random, _ = seeding.np_random(seed)
        self._state = self.episode.reset()
        return self._state.astype(np.float32), self._info()

    def step(self, action: int | np.integer[Any]) -> tuple[F32, float, bool, bool, dict[str, Any]]:
        """Trade on the day's decision; the next day's observation, the reward,
        ``terminated`` (the last day), ``truncated`` (never) and info."""
        if self._state is None:
            raise RlError("step() before reset(); call reset() first")
        if not 0 <= int(action) < _N_ACTIONS:
            raise RlError(f"action is {action!r}; expected 0 (HOLD), 1 (BUY) or 2 (SELL)")
        strength, confidence = self._strength()
        state, reward, done = self.episode.step(int(action), strength, confidence)
        self._state = None if done else state
        info = self._info()
        info["decision"] = self.episode.last_decision  # what the sleeve traded on
        return state.astype(np.float32), reward, done, False, info

    def _strength(self) -> tuple[float, float]:
        assert self._state is not None
        if callable(self.strength):
            strength, confidence = self.strength(self.episode.day, self._state)
            return float(strength), float(confidence)
        return float(self.strength), self.confidence

    def _info(self) -> dict[str, Any]:
        day = self.episode.day
        return {
            "day": day,
            "date": str(self.inputs.dates[day]),
            "equity": self.episode.equity,
            "total_return": self.episode.equity / self.inputs.capital - 1.0,
        }

    def render(self) -> None:
        """Nothing to render (no render modes)."""

    def close(self) -> None:
        """Nothing to release."""


def _bounds() -> tuple[F32, F32]:
    """The schema's feature bounds, widened by its validation tolerance, as float32."""
    low = np.array([f.low for f in FEATURES], dtype=np.float64) - RANGE_TOLERANCE
    high = np.array([f.high for f in FEATURES], dtype=np.float64) + RANGE_TOLERANCE
    return low.astype(np.float32), high.astype(np.float32)


@functools.cache
def _gym_class() -> type[TradingEnv]:
    """``TradingEnv`` with ``gymnasium.Env`` as a base (stable-baselines3 checks for it),
    made once, when the first environment is."""
    try:
        import gymnasium
    except ImportError as exc:
        raise RlError('TradingEnv needs gymnasium: pip install "otonom-trainer[rl]"') from exc
    made = type("TradingEnv", (TradingEnv, gymnasium.Env), {"__module__": __name__})
    return cast("type[TradingEnv]", made)


def bc_strength(policy: RlPolicy) -> StrengthFn:
    """The cloned policy's strength and top probability for the day's state (what the RL
    analyst votes with), through the runtime's ONNX policy."""

    def strength(day: int, state: F64) -> tuple[float, float]:
        del day
        _, value, probs = policy.predict(state.astype(np.float32), return_probs=True)
        return float(value), float(np.max(probs))

    return strength


def load_trading_env(
    url: str,
    config: StrategyConfig,
    symbol: str,
    start: dt.date,
    end: dt.date,
    **options: Any,
) -> TradingEnv:
    """A ``TradingEnv`` over ``symbol``'s decision days ``start .. end`` in the store at
    ``url`` (read once; ``options``: ``TradingEnv``'s keywords)."""
    from otonom_runtime.store import get_session

    with get_session(url) as session:
        inputs = episode_inputs(session, config, symbol, start, end)
    return TradingEnv(inputs, **options)

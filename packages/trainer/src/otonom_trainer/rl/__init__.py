"""Reinforcement learning on the backtester (the ``rl`` extra: gymnasium and
stable-baselines3).

``env`` (``TradingEnv``: a gymnasium environment over one symbol's bars in the store, whose
states, fills and costs are the backtester's, so an episode's return is a backtest's), ``ppo``
(the cloned ``PolicyNet`` as the actor of a stable-baselines3 PPO policy, a value head, the KL
term toward the clone) and ``finetune`` (``otonom-train finetune``: PPO from a training run,
exported through ``otonom_trainer.export``). Importing this package imports none of them (and
so not gymnasium, stable-baselines3 or torch).
"""

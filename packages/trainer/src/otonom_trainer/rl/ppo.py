"""PPO fine-tuning of a behaviour-cloned ``PolicyNet`` on ``TradingEnv`` (stable-baselines3).

Rules (each one tested):

* **The clone is the actor.** ``bc_policy_class()`` is a stable-baselines3
  ``ActorCriticPolicy`` whose actor is a copy of the cloned ``PolicyNet`` itself (its action
  logits are the categorical distribution's; SB3's ``MlpPolicy`` would be another network), so
  the first action distribution is the clone's softmax on the same states, exactly. A value
  head (``critic``: 34 -> ``critic_hidden`` (Tanh) x 2 -> 1) is added and trained from
  scratch; the actor's dropout is off throughout (the rollouts and the updates see one
  network).
* **Kept near its teacher.** A frozen copy of the clone (the teacher) is held beside the
  actor; every update adds ``kl_coef x (KL(teacher || actor) + (strength - teacher
  strength)^2)`` to PPO's loss, so the action distribution drifts from the clone only as far
  as the advantage pays for, and the strength head (no PPO gradient of its own) stays the
  clone's. It enters through stable-baselines3's entropy slot: ``evaluate_actions`` returns
  ``entropy_coef x H - kl_coef x (KL + strength error)`` as the "entropy" and PPO runs with
  ``ent_coef = 1``, so PPO's ``- ent_coef x mean(entropy)`` is exactly the two terms
  (``train/entropy_loss`` in SB3's log is that regulariser).
* **Strength and confidence.** The action is discrete (``TradingEnv``'s ``Discrete(3)``); each
  step's strength and vote confidence are the current actor's strength head and top
  probability for the state (``ActorStrength``), what the exported model will give the RL
  analyst, so the environment trades what the runtime will serve.
* **Deployment mode.** ``mode="voter"`` (the default): fine-tuned and judged as the
  ensemble's 4th voter, today's deployment; ``"sole"``: as the only decider; ``"filter"``:
  as a filter on the three analysts' vote (with the strategy's ``filter_veto`` and
  ``filter_size``). Deploy it in the mode it was tuned in (the strategy's
  ``ensemble.rl_policy.mode``).
"""

from __future__ import annotations

import copy
import functools
import sys
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from otonom_runtime.backtest import EpisodeInputs
from otonom_trainer.rl.env import TradingEnv
from otonom_trainer.rl.options import FinetuneConfig, RlError

if TYPE_CHECKING:
    import torch

    from otonom_trainer.model import PolicyNet, PolicyNetwork

__all__ = ["ActorStrength", "FinetuneConfig", "bc_policy_class", "episode_return", "make_ppo"]

F64 = npt.NDArray[np.float64]


class ActorStrength:
    """A ``StrengthFn`` reading a ``PolicyNet``'s strength head and top probability for the
    day's state (``net``: set once the PPO policy exists; it follows the actor's weights as
    they train).

    The caller that has just run the actor on the step's observation (the PPO policy's
    ``forward`` in a rollout, ``episode_return``) ``offer``s its outputs: the next call for
    that same state uses them instead of running the actor again, the same numbers (one row,
    the same network; tested bit for bit). An offer serves one call, and only the state it was
    made for; any other call runs ``net``."""

    def __init__(self, net: PolicyNetwork | None = None) -> None:
        self.net = net
        self._offered: tuple[npt.NDArray[np.float32], torch.Tensor, torch.Tensor] | None = None

    def offer(
        self, obs: npt.NDArray[np.float32], logits: torch.Tensor, strength: torch.Tensor
    ) -> None:
        """The actor's ``(1, 3)`` logits and ``(1, 1)`` strength for the one-row observation
        ``obs`` (float32 (34,)), kept for the next call."""
        self._offered = (obs, logits, strength)

    def __call__(self, day: int, state: F64) -> tuple[float, float]:
        import torch

        del day
        offered, self._offered = self._offered, None
        if offered is not None and np.array_equal(offered[0], state.astype(np.float32)):
            _, logits, strength = offered
            probs = torch.softmax(logits, dim=-1)  # as PolicyNet.probabilities
        else:
            if self.net is None:
                raise RlError("ActorStrength has no network yet; set .net before the first step")
            with torch.no_grad():
                probs, strength = self.net.probabilities(
                    torch.as_tensor(state[None], dtype=torch.float32)
                )
        return float(strength[0, 0]), float(probs.max())


def _import_sb3() -> None:
    """Import stable-baselines3 with the unmaintained ``gym`` hidden from it.

    SB3 imports ``gym`` when it is installed (d3rlpy, the bench extra, pulls it in) only to
    convert ``gym`` environments; ``TradingEnv`` is gymnasium's. Importing ``gym`` prints a
    deprecation notice on stderr and sets environment variables in the process, so while SB3
    is first imported ``gym`` reads as not installed (SB3 handles that); ``sys.modules`` is
    restored after. Raises ImportError when stable-baselines3 itself is missing."""
    if "stable_baselines3" in sys.modules or "gym" in sys.modules:
        import stable_baselines3

        return
    sys.modules["gym"] = None  # type: ignore[assignment]
    try:
        import stable_baselines3
        import stable_baselines3.common.vec_env.patch_gym  # noqa: F401
    finally:
        del sys.modules["gym"]


@functools.cache
def bc_policy_class() -> type[Any]:
    """The stable-baselines3 policy class with a cloned ``PolicyNet`` as its actor (see the
    module docstring); its keywords: ``bc_net`` (the clone), ``kl_coef``, ``entropy_coef``,
    ``critic_hidden``. Made once, when first asked for (stable-baselines3 and torch are
    imported then)."""
    import torch

    _import_sb3()
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    class BcActorCriticPolicy(ActorCriticPolicy):
        def __init__(
            self,
            *args: Any,
            bc_net: PolicyNet,
            kl_coef: float = 0.1,
            entropy_coef: float = 0.0,
            critic_hidden: int = 64,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.kl_coef, self.entropy_coef = float(kl_coef), float(entropy_coef)
            self.strength_fn: ActorStrength | None = None  # the env's (make_ppo sets it)
            self.actor = copy.deepcopy(bc_net).float().eval()
            self.teacher = copy.deepcopy(bc_net).float().eval().requires_grad_(False)
            width = int(critic_hidden)
            self.critic = nn.Sequential(
                nn.Linear(bc_net.state_dim, width),
                nn.Tanh(),
                nn.Linear(width, width),
                nn.Tanh(),
                nn.Linear(width, 1),
            )
            trained = nn.ModuleList([self.actor, self.critic])
            self.optimizer = _optimizer(self, trained, self._lr_schedule(1.0))

        def _build(self, lr_schedule: Any) -> None:
            # SB3's MLP extractor and heads are not built: the actor is the clone (__init__)
            self._lr_schedule = lr_schedule

        def set_training_mode(self, mode: bool) -> None:
            del mode
            self.train(False)  # dropout off in updates too: one network for both phases

        def _dist(self, obs: torch.Tensor) -> Any:
            logits, _ = self.actor(obs.float())
            return self.action_dist.proba_distribution(action_logits=logits)

        def forward(
            self, obs: torch.Tensor, deterministic: bool = False
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits, strength = self.actor(obs.float())
            if self.strength_fn is not None and len(obs) == 1:  # a rollout's step
                row = obs[0].detach().float().numpy().copy()
                self.strength_fn.offer(row, logits.detach(), strength.detach())
            dist = self.action_dist.proba_distribution(action_logits=logits)
            actions = dist.get_actions(deterministic=deterministic)
            return actions, self.critic(obs.float()), dist.log_prob(actions)

        def _predict(self, observation: Any, deterministic: bool = False) -> Any:
            return self._dist(observation).get_actions(deterministic=deterministic)

        def get_distribution(self, obs: Any) -> Any:
            return self._dist(obs)

        def predict_values(self, obs: Any) -> Any:
            return self.critic(obs.float())

        def evaluate_actions(self, obs: Any, actions: torch.Tensor) -> tuple[Any, Any, Any]:
            logits, strength = self.actor(obs.float())
            dist = self.action_dist.proba_distribution(action_logits=logits)
            with torch.no_grad():
                teacher_logits, teacher_strength = self.teacher(obs.float())
            log_p = torch.log_softmax(logits, dim=-1)  # the teacher's op: 0 KL at the start
            log_q = torch.log_softmax(teacher_logits, dim=-1)
            kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
            drift = kl + (strength - teacher_strength).squeeze(-1) ** 2
            regulariser = (
                self.entropy_coef * cast("torch.Tensor", dist.entropy()) - self.kl_coef * drift
            )
            return self.critic(obs.float()), dist.log_prob(actions), regulariser

    return BcActorCriticPolicy


def _optimizer(policy: Any, trained: torch.nn.Module, lr: float) -> Any:
    """The policy's ``optimizer_class`` over ``trained``'s parameters; SB3's default, Adam, as
    ``_flat_adam``."""
    import torch

    if policy.optimizer_class is torch.optim.Adam:
        return _flat_adam(trained, lr, policy.optimizer_kwargs)
    return policy.optimizer_class(list(trained.parameters()), lr=lr, **policy.optimizer_kwargs)


def _flat_adam(trained: torch.nn.Module, lr: float, optimizer_kwargs: dict[str, Any]) -> Any:
    """SB3's Adam (its ``optimizer_kwargs``: ``eps=1e-5``) as ``FlatAdam`` over ``trained``'s
    parameters moved into one flat buffer (``flatten_parameters``): the same update, element
    for element (the fine-tuned weights are bit-identical, tested), without
    ``torch.optim.Adam``'s ``torch._dynamo`` import (~2.8 s of CPU at the first step) and its
    per-step wrappers. ``zero_grad`` zeroes the flat gradient in place, so each parameter's
    gradient stays a view of it (SB3 calls ``zero_grad()``, then ``clip_grad_norm_`` over the
    parameters, then ``step()``). Keywords FlatAdam lacks (``amsgrad``, ...) get torch's
    Adam."""
    import torch

    from otonom_trainer.training.optim import FlatAdam, flatten_parameters

    known = {"eps", "betas", "weight_decay"}
    if not set(optimizer_kwargs) <= known:
        return torch.optim.Adam(trained.parameters(), lr=lr, **optimizer_kwargs)

    class _ViewsAdam(FlatAdam):
        def zero_grad(self, set_to_none: bool = True) -> None:
            del set_to_none  # a None gradient would cut the parameters' views
            if self.param.grad is not None:
                self.param.grad.zero_()

    flat, _ = flatten_parameters(trained)
    return _ViewsAdam(flat, lr=lr, **optimizer_kwargs)


def make_ppo(inputs: EpisodeInputs, bc_net: PolicyNet, config: FinetuneConfig) -> Any:
    """A stable-baselines3 ``PPO`` on a ``TradingEnv`` of ``inputs`` (``config.mode``) with
    ``bc_policy_class()`` built from ``bc_net``; the environment's strength and confidence
    are the actor's (``ActorStrength``)."""
    try:
        _import_sb3()
        from stable_baselines3 import PPO
    except ImportError as exc:
        raise RlError(
            'fine-tuning needs stable-baselines3: pip install "otonom-trainer[rl]"'
        ) from exc
    if config.batch_size > config.n_steps:
        raise RlError(
            f"batch_size is {config.batch_size}; expected at most n_steps ({config.n_steps})"
        )
    strength = ActorStrength()
    env = TradingEnv(inputs, mode=config.mode, strength=strength)
    model = PPO(
        bc_policy_class(),
        cast("Any", env),  # a gymnasium.Env subclass (TradingEnv.__new__)
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        clip_range=config.clip_range,
        ent_coef=1.0,  # the regulariser's slot: see the module docstring
        seed=config.seed,
        device="cpu",
        verbose=0,
        policy_kwargs={
            "bc_net": bc_net,
            "kl_coef": config.kl_coef,
            "entropy_coef": config.entropy_coef,
            "critic_hidden": config.critic_hidden,
        },
    )
    # SB3's default logger makes an empty folder in the temp directory on every learn();
    # a logger with no outputs writes nothing anywhere
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    strength.net = cast("PolicyNet", model.policy.actor)
    policy: Any = model.policy  # the BcActorCriticPolicy
    policy.strength_fn = strength
    return model


def episode_return(inputs: EpisodeInputs, net: PolicyNet, mode: str) -> tuple[float, list[int]]:
    """The total return of one episode of ``inputs`` with ``net`` acting greedily (its
    argmax action, its strength and top probability), and the actions it took."""
    import torch

    net = copy.deepcopy(net).eval()  # dropout off, the caller's network left as it is
    strength_fn = ActorStrength(net)
    env = TradingEnv(inputs, mode=mode, strength=strength_fn)
    obs, info = env.reset()
    actions: list[int] = []
    done = False
    while not done:
        with torch.no_grad():
            logits, strength = net(torch.as_tensor(obs[None]))
        strength_fn.offer(obs, logits, strength)  # the step's strength: no second forward
        actions.append(int(logits.argmax()))
        obs, _, done, _, info = env.step(actions[-1])
    return float(info["total_return"]), actions

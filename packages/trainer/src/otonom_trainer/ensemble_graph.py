"""The merged ONNX graph of an ensemble of policy MLPs, and its combine rule in numpy.

One graph takes ``state`` float32 [batch, 34] and gives ``action_probs`` [batch, 3] and
``strength`` [batch, 1], like any policy (docs/model-format.md), from N ``PolicyNet`` members
(their weights as numpy arrays: ``MemberWeights``)::

    state ─┬─ Gemm+Relu ─ ... ─ Gemm+Relu ─┐   member 1's trunk (its own widths)
           ├─ Gemm+Relu ─ ... ─ Gemm+Relu ─┤   member 2's trunk
           └─ ...                          ┴─ Concat [batch, H1+...+HN]
                 ├─ Gemm (block-diagonal: every member's action head) ─ Reshape [batch, N, 3]
                 │     ─ Softmax ─ ReduceMean over members           (combine "mean")
                 │              └─ Hardmax ─ Concat ─ Reshape ─ MatMul   (combine "vote")
                 └─ Gemm (block-diagonal: every strength head) ─ Sigmoid ─ ReduceMean

The members' trunks stay separate Gemms: each is as small as one member's, so onnxruntime
neither wakes its thread pool for them at batch 1 nor computes a block-diagonal matrix's zeros
(both measured slower: docs/benchmarks.md, "Ensembles"). The heads, a few kilobytes, are one
block-diagonal Gemm each.

The combine rules (``COMBINE_RULES``), written once here in numpy (``combine_outputs``, the
reference the export's parity check and the tests compare the graph with):

* ``"mean"``: ``action_probs`` is the mean of the members' probabilities.
* ``"vote"``: each member votes for its action (the argmax of its probabilities, the first on
  a tie, as the runtime reads one policy). With ``v`` the vote fractions (votes / N), ``m`` the
  mean probabilities and ``w = vote_weight(N) = 1 / (2 (N + 1))``, ``action_probs = (1 - w) v
  + w m``: a probability row (each term is one, ``w`` in (0, 1)) whose argmax is the majority
  action. An action with more votes leads one with fewer by at least ``(1 - w) / N - w = 1 /
  (2N)``, more than ``w m`` can make up; actions with equally many votes differ by ``w`` times
  their mean probabilities, so the higher mean probability breaks a tie; equal in both, the
  first action (HOLD, BUY, SELL) wins, the runtime's argmax rule. Means closer than float32
  rounding (about 1e-7) may go either way.

``strength`` is the mean of the members' strengths under both rules (the guide's
``np.mean(strengths)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from otonom_schema import STATE_DIM

__all__ = [
    "COMBINE_RULES",
    "MIN_MEMBERS",
    "MemberWeights",
    "block_diagonal",
    "combine_outputs",
    "ensemble_graph",
    "vote_weight",
]

COMBINE_RULES: Final = ("mean", "vote")
MIN_MEMBERS: Final = 2
N_ACTIONS: Final = 3
_OPSET: Final = 17  # the model format's (otonom_trainer.export.OPSET; not imported: no torch)
_IR_VERSION: Final = 8

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MemberWeights:
    """One policy MLP as numpy float32 arrays: ``trunk`` ((W [in, out], b [out]) per layer,
    ``in`` of the first = 34), ``action`` (W [H, 3], b [3]), ``strength`` (W [H, 1], b [1])."""

    trunk: tuple[tuple[F32, F32], ...]
    action: tuple[F32, F32]
    strength: tuple[F32, F32]

    @property
    def width(self) -> int:
        """The last trunk layer's width ``H``."""
        return int(self.trunk[-1][0].shape[1])


def vote_weight(n: int) -> float:
    """``w`` of the vote rule for ``n`` members: ``1 / (2 (n + 1))`` (see the module doc)."""
    return 1.0 / (2.0 * (n + 1))


def combine_outputs(
    probs: npt.ArrayLike, strengths: npt.ArrayLike, combine: str
) -> tuple[F32, F32]:
    """The rule in numpy: members' ``probs`` (N, batch, 3) and ``strengths`` (N, batch) or (N,
    batch, 1) -> the ensemble's ``(action_probs (batch, 3), strength (batch,))``, float32,
    computed in float64. The votes are each member's argmax (the first on a tie)."""
    p = np.asarray(probs, dtype=np.float64)
    s = np.asarray(strengths, dtype=np.float64)
    n = p.shape[0]
    mean = p.mean(axis=0)
    strength = s.reshape(n, -1).mean(axis=0).astype(np.float32)
    if combine == "mean":
        return mean.astype(np.float32), strength
    if combine != "vote":
        raise ValueError(f"combine: got {combine!r}; expected one of {COMBINE_RULES}")
    votes = np.eye(N_ACTIONS)[p.argmax(axis=-1)].mean(axis=0)  # vote fractions
    w = vote_weight(n)
    return ((1.0 - w) * votes + w * mean).astype(np.float32), strength


def block_diagonal(blocks: Sequence[F32]) -> F32:
    """The matrices ``blocks`` on the diagonal of one, zeros elsewhere (the merged heads)."""
    rows = sum(b.shape[0] for b in blocks)
    cols = sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), dtype=np.float32)
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


class _Graph:
    """Nodes and initializers being collected (names are unique by construction)."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


def _trunks(g: _Graph, members: Sequence[MemberWeights]) -> list[str]:
    outs = []
    for k, m in enumerate(members):
        x = "state"
        for i, (w, b) in enumerate(m.trunk):
            weights = [g.const(f"m{k}_w{i}", w), g.const(f"m{k}_b{i}", b)]
            h = g.node("Gemm", [x, *weights], f"m{k}_z{i}")
            x = g.node("Relu", [h], f"m{k}_h{i}")
        outs.append(x)
    return outs


def _vote(g: _Graph, probs3: str, n: int) -> str:
    """``(1 - w) * vote fractions + w * mean probabilities`` from ``probs3`` [batch, n, 3]."""
    w = vote_weight(n)
    # Hardmax: 1 at the first maximum of each member's row (its vote), 0 elsewhere
    ones = g.node("Hardmax", [probs3], "member_votes", axis=-1)
    both = g.node("Concat", [probs3, ones], "vote_rows", axis=1)  # [batch, 2n, 3]
    flat = g.node(
        "Reshape", [both, g.const("flat_shape", [0, 2 * n * N_ACTIONS], np.int64)], "vote_flat"
    )
    # rows 0..3n-1 weigh the probabilities (w / n each), rows 3n..6n-1 the votes ((1 - w) / n)
    eye = np.eye(N_ACTIONS)
    mix = np.concatenate([np.tile(eye * (w / n), (n, 1)), np.tile(eye * ((1.0 - w) / n), (n, 1))])
    return g.node("MatMul", [flat, g.const("vote_mix", mix)], "action_probs")


def ensemble_graph(members: Sequence[MemberWeights], combine: str) -> Any:
    """The merged graph (an ``onnx.ModelProto``, opset 17, IR 8, dynamic batch) of ``members``
    (at least ``MIN_MEMBERS``) combined by ``combine`` (``"mean"`` or ``"vote"``)."""
    from onnx import TensorProto, checker, helper

    n = len(members)
    if n < MIN_MEMBERS:
        raise ValueError(f"an ensemble needs at least {MIN_MEMBERS} members; got {n}")
    if combine not in COMBINE_RULES:
        raise ValueError(f"combine: got {combine!r}; expected one of {COMBINE_RULES}")
    for k, m in enumerate(members):
        if m.trunk[0][0].shape[0] != STATE_DIM:
            raise ValueError(f"member {k} takes {m.trunk[0][0].shape[0]} inputs, not {STATE_DIM}")
    g = _Graph()
    hidden = g.node("Concat", _trunks(g, members), "hidden", axis=1)
    wa = g.const("action_w", block_diagonal([m.action[0] for m in members]))
    ba = g.const("action_b", np.concatenate([m.action[1] for m in members]))
    logits = g.node("Gemm", [hidden, wa, ba], "action_logits")
    shape = g.const("member_shape", [0, n, N_ACTIONS], np.int64)
    per_member = g.node("Reshape", [logits, shape], "member_logits")  # [batch, n, 3]
    probs3 = g.node("Softmax", [per_member], "member_probs", axis=-1)
    if combine == "mean":
        g.node("ReduceMean", [probs3], "action_probs", axes=[1], keepdims=0)
    else:
        _vote(g, probs3, n)
    ws = g.const("strength_w", block_diagonal([m.strength[0] for m in members]))
    bs = g.const("strength_b", np.concatenate([m.strength[1] for m in members]))
    z = g.node("Gemm", [hidden, ws, bs], "strength_logits")
    s = g.node("Sigmoid", [z], "member_strengths")
    g.node("ReduceMean", [s], "strength", axes=[1], keepdims=1)

    def io(name: str, width: int) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])

    graph = helper.make_graph(
        g.nodes,
        f"otonom_ensemble_{combine}_{n}",
        [io("state", STATE_DIM)],
        [io("action_probs", N_ACTIONS), io("strength", 1)],
        g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        ir_version=_IR_VERSION,
        producer_name="otonom-trainer ensemble",
    )
    checker.check_model(model)
    return model

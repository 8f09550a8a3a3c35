"""bench/_ensemble_layouts.py (bench/ensemble.py --layouts), in process on small random members:
every other layout's graph gives the shipped graph's outputs (mean and vote), the lower bounds
have only trunks, and a floor runs. Cheap (about a second): no torch export, no timing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from otonom_trainer.ensemble_graph import MemberWeights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layouts_module() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import _ensemble_layouts

        yield _ensemble_layouts
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _member(seed: int, hidden: int = 16) -> MemberWeights:
    rng = np.random.default_rng(seed)

    def dense(i: int, o: int) -> tuple[np.ndarray, np.ndarray]:
        w = rng.standard_normal((i, o)).astype(np.float32) / np.sqrt(i)
        return w, rng.standard_normal(o).astype(np.float32) * 0.1

    return MemberWeights(
        (dense(34, hidden), dense(hidden, hidden)), dense(hidden, 3), dense(hidden, 1)
    )


def test_every_layout_equals_the_shipped_graph(layouts_module: ModuleType, tmp_path: Path) -> None:
    members = [_member(k) for k in range(3)]
    graphs = layouts_module.layout_graphs(members, tmp_path / "member.onnx")
    states = np.random.default_rng(9).standard_normal((64, 34)).astype(np.float32)
    checks = layouts_module.check_layouts(graphs, states)
    relaid = [k for k in checks if not k.startswith("shipped")]
    assert len(relaid) == 6  # fused, block-diagonal, batched; mean and vote each
    for name, v in checks.items():
        assert v["allclose"], (name, v)
        assert v["same_argmax"], (name, v)
    bounds = [k for k, (_, combine) in graphs.items() if combine is None and k != "one member"]
    trunks = [f"{k} trunk{'s' if k > 1 else ''}, no combine (bound)" for k in (3, 2, 1)]
    assert bounds == ["3 trunks + Concat + heads Gemm (bound)", *trunks]
    heads = graphs[bounds[0]][0]
    assert [n.op_type for n in heads.graph.node].count("Gemm") == 7
    three = graphs[trunks[0]][0]
    assert {n.op_type for n in three.graph.node} == {"Gemm", "Relu"}
    assert len(three.graph.output) == 3
    run = layouts_module.floor(three, states[:2], 1)
    run()
    assert [o.shape for o in run.keep[3]] == [(2, 16)] * 3

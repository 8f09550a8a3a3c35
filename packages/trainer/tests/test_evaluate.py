"""Evaluation through the runtime: hand-checked metrics, the sklearn-style report, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from otonom_runtime.testing.models import make_policy_model, numpy_forward
from otonom_schema import Action, OfflineDataset, compute_states, save_dataset
from otonom_schema.testing import random_history
from otonom_trainer.evaluate import (
    CLASS_NAMES,
    EvaluationReport,
    classification_metrics,
    confusion_matrix,
    evaluate,
    plot_confusion_matrix,
)
from otonom_trainer.export import export_onnx
from otonom_trainer.model import PolicyNet

H, B, S = int(Action.HOLD), int(Action.BUY), int(Action.SELL)
METRICS = {"val_action_acc": 0.5, "train_action_acc": 0.5, "best_val_loss": 1.0, "best_epoch": 1}


def _save(path: Path, states: np.ndarray, actions: list[int], strengths: np.ndarray) -> Path:
    n = len(actions)
    dataset = OfflineDataset(
        states=states,
        actions=np.asarray(actions, dtype=np.int64),
        strengths=np.asarray(strengths, dtype=np.float32),
        symbols=np.full(n, "TEST"),
        dates=np.datetime64("2024-01-01", "D") + np.arange(n),
        metadata={"source": "test_evaluate"},
    )
    return save_dataset(dataset, path)


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model and a 10-row dataset whose predictions and true actions are known.

    Predicted (from an independent numpy forward pass): 4 HOLD, 3 BUY, 3 SELL rows, each with a
    clear top-probability margin. True actions per predicted group: HOLD -> [H, H, B, S],
    BUY -> [B, B, H], SELL -> [S, H, H]. So the confusion matrix (rows true, columns predicted)
    is [[2, 1, 2], [1, 2, 0], [1, 0, 1]]. True strengths are the predicted ones +- 0.1 on the
    BUY/SELL-true rows (MAE 0.1) and at least 0.4 off on the HOLD-true rows (excluded).
    """
    root = tmp_path_factory.mktemp("known")
    model = root / "policy.onnx"
    weights = make_policy_model(model, hidden=8, layers=1, seed=4)
    states = compute_states(random_history(400, seed=1))
    probs, strength = numpy_forward(weights, states)
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    pred = probs.argmax(axis=1)
    rows: list[int] = []
    for cls, k in ((H, 4), (B, 3), (S, 3)):
        candidates = np.flatnonzero((pred == cls) & clear)
        assert candidates.size >= k, "fixture precondition: the model predicts every class"
        rows += candidates[:k].tolist()
    true = [H, H, B, S, B, B, H, S, H, H]
    s_pred = strength[rows].astype(np.float64)
    s_true = np.where(s_pred > 0.5, s_pred - 0.1, s_pred + 0.1)
    hold = np.asarray(true) == H
    s_true[hold] = np.where(s_pred[hold] > 0.5, 0.0, 1.0)
    assert np.all(np.abs(s_true[hold] - s_pred[hold]) >= 0.4)
    dataset = _save(root / "data.npz", states[rows], true, s_true)
    return model, dataset


def test_evaluate_hand_checked_numbers(known: tuple[Path, Path]) -> None:
    model, dataset = known
    report = evaluate(model, dataset)

    assert report.n == 10
    assert report.model_path == model
    np.testing.assert_array_equal(report.confusion, [[2, 1, 2], [1, 2, 0], [1, 0, 1]])
    assert report.confusion.dtype == np.int64
    assert report.accuracy == pytest.approx(0.5)
    hold, buy, sell = report.per_class
    # HOLD: 2 of 4 HOLD predictions right, 2 of 5 HOLD rows found
    assert (hold.precision, hold.recall, hold.support) == (pytest.approx(0.5), 0.4, 5)
    assert hold.f1 == pytest.approx(4 / 9)
    assert (buy.precision, buy.recall, buy.f1, buy.support) == pytest.approx((2 / 3,) * 3 + (3,))
    assert (sell.precision, sell.recall, sell.support) == (pytest.approx(1 / 3), 0.5, 2)
    assert sell.f1 == pytest.approx(0.4)
    macro = report.macro_avg
    assert (macro.precision, macro.recall, macro.f1) == pytest.approx(
        (0.5, (0.4 + 2 / 3 + 0.5) / 3, (4 / 9 + 2 / 3 + 0.4) / 3)
    )
    weighted = report.weighted_avg
    assert (weighted.precision, weighted.recall, weighted.f1) == pytest.approx(
        ((2.5 + 2 + 2 / 3) / 10, 0.5, (20 / 9 + 2 + 0.8) / 10)
    )
    assert macro.support == weighted.support == 10
    assert report.strength_rows == 5
    assert report.strength_mae == pytest.approx(0.1, abs=1e-6)


def test_formatted_report_has_the_sklearn_layout(known: tuple[Path, Path]) -> None:
    report = evaluate(*known)
    expected = (
        "              precision    recall  f1-score   support\n"
        "\n"
        "        HOLD       0.50      0.40      0.44         5\n"
        "         BUY       0.67      0.67      0.67         3\n"
        "        SELL       0.33      0.50      0.40         2\n"
        "\n"
        "    accuracy                           0.50        10\n"
        "   macro avg       0.50      0.52      0.50        10\n"
        "weighted avg       0.52      0.50      0.50        10\n"
    )
    assert report.classification_report() == expected
    text = report.format()
    assert expected.rstrip("\n") in text
    assert "Accuracy: 0.5000 (5/10)" in text
    assert "Strength MAE: 0.1000 (on 5 BUY/SELL rows)" in text
    matrix = text.split("Confusion matrix (rows = true action, columns = predicted):\n")[1]
    assert matrix.splitlines() == [
        "true \\ pred  HOLD   BUY  SELL",
        "HOLD            2     1     2",
        "BUY             1     2     0",
        "SELL            1     0     1",
    ]


def test_report_matches_scikit_learns_documented_example() -> None:
    # sklearn's classification_report docstring: y_true [0,1,2,2,2], y_pred [0,0,2,2,1]
    report = EvaluationReport.from_predictions(
        [0, 1, 2, 2, 2], [0, 0, 2, 2, 1], np.zeros(5), np.zeros(5)
    )
    assert report.classification_report() == (
        "              precision    recall  f1-score   support\n"
        "\n"
        "        HOLD       0.50      1.00      0.67         1\n"
        "         BUY       0.00      0.00      0.00         1\n"
        "        SELL       1.00      0.67      0.80         3\n"
        "\n"
        "    accuracy                           0.60         5\n"
        "   macro avg       0.50      0.56      0.49         5\n"
        "weighted avg       0.70      0.60      0.61         5\n"
    )
    assert report.strength_mae == 0.0
    assert (
        report.classification_report(digits=4)
        .splitlines()[2]
        .endswith("0.5000    1.0000    0.6667         1")
    )


def test_zero_division_gives_zero_not_nan() -> None:
    # SELL is never true and never predicted; BUY is predicted but never right
    report = EvaluationReport.from_predictions([H, H, H, H], [H, B, H, B], np.zeros(4), np.zeros(4))
    hold, buy, sell = report.per_class
    assert (hold.precision, hold.recall, hold.f1, hold.support) == (
        1.0,
        0.5,
        pytest.approx(2 / 3),
        4,
    )
    assert (buy.precision, buy.recall, buy.f1, buy.support) == (0.0, 0.0, 0.0, 0)
    assert (sell.precision, sell.recall, sell.f1, sell.support) == (0.0, 0.0, 0.0, 0)
    assert report.macro_avg.precision == pytest.approx(1 / 3)
    assert report.strength_mae is None
    assert report.strength_rows == 0
    assert "n/a (no BUY/SELL rows)" in report.format()
    json.dumps(report.to_dict(), allow_nan=False)  # no NaN anywhere


def test_evaluate_matches_torch_on_an_exported_policynet(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = PolicyNet(hidden_dim=16, num_layers=2, dropout=0.0)
    states = compute_states(random_history(300, seed=7))
    with torch.no_grad():
        net.action_head.weight.mul_(20)  # confident, varied decisions (default init: all HOLD)
        probs, strength = net.probabilities(torch.from_numpy(states))
    pred = probs.argmax(dim=1).numpy()
    assert np.all(np.bincount(pred, minlength=3) > 0)  # precondition: every class predicted
    model = export_onnx(
        net,
        tmp_path / "m" / "policy_best.onnx",
        metrics=METRICS,
        training_config={},
        dataset_sha256="0" * 64,
        parity_states=states,
    )
    dataset = _save(tmp_path / "d.npz", states, pred.tolist(), strength.numpy()[:, 0])

    report = evaluate(model.parent, dataset)  # a model folder works too
    assert report.accuracy == 1.0
    np.testing.assert_array_equal(report.confusion, np.diag(np.bincount(pred, minlength=3)))
    assert report.strength_rows == int(np.count_nonzero(pred != H))
    assert report.strength_mae is not None
    assert report.strength_mae < 1e-5


def test_evaluate_refuses_an_empty_dataset(known: tuple[Path, Path], tmp_path: Path) -> None:
    empty = _save(tmp_path / "empty.npz", np.zeros((0, 34), dtype=np.float32), [], np.zeros(0))
    with pytest.raises(ValueError, match="no rows"):
        evaluate(known[0], empty)


def test_confusion_matrix_and_metrics_check_their_inputs() -> None:
    np.testing.assert_array_equal(
        confusion_matrix([0, 1, 2, 2], [2, 1, 2, 0]), [[0, 0, 1], [0, 1, 0], [1, 0, 1]]
    )
    with pytest.raises(ValueError, match="Action values"):
        confusion_matrix([0, 3], [0, 1])
    with pytest.raises(ValueError, match=r"\(N,\) arrays"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="square"):
        classification_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no rows"):
        EvaluationReport.from_predictions([], [], [], [])


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    import matplotlib.image

    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]], dtype=np.int64)  # an empty row too
    out = plot_confusion_matrix(cm, tmp_path / "plots" / "cm.png")
    assert out == tmp_path / "plots" / "cm.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        plot_confusion_matrix(np.zeros((2, 2), dtype=np.int64), tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative integer"):
        plot_confusion_matrix(-np.ones((3, 3), dtype=np.int64), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert CLASS_NAMES == ("HOLD", "BUY", "SELL")

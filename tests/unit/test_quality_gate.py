"""The gate's arithmetic: metrics from predictions, checks that fail closed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.model.quality import (
    Evaluation,
    EvaluationError,
    at_least,
    evaluate,
    failure_line,
    judge,
)

CLASSES = ["cat", "dog", "eel"]


def one_hot(predicted: list[int]) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[predicted] * 0.8 + 0.05


def test_evaluate_counts_every_cell_of_the_confusion_matrix():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = [0, 0, 1, 1, 2, 2, 2, 0]
    ev = evaluate(y, one_hot(pred), CLASSES)
    assert ev.confusion == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert ev.accuracy == pytest.approx(5 / 8) and ev.examples == 8
    assert ev.per_class_recall == pytest.approx({"cat": 2 / 3, "dog": 1 / 2, "eel": 2 / 3})


def test_a_class_without_held_out_examples_has_no_recall():
    ev = evaluate(np.array([0, 1]), one_hot([0, 1]), CLASSES)
    assert math.isnan(ev.per_class_recall["eel"])
    check = judge(ev, baseline_accuracy=None, serving=None, min_accuracy=None, min_class_recall=0.5,
                  min_gain_over_baseline=None, max_drop_vs_serving=None)
    assert [c.passed for c in check] == [True, True, False]  # unmeasurable recall fails closed


@pytest.mark.parametrize("probs, y, reason", [
    (np.zeros((0, 3)), np.zeros(0), "no held-out examples"),
    (np.full((2, 3), np.nan), np.array([0, 1]), "non-finite"),
    (np.ones((2, 4)), np.array([0, 1]), "do not match"),
    (np.ones((3, 3)), np.array([0, 1]), "do not match"),
    (np.ones((2, 3)), np.array([0, 5]), "labels outside"),
])
def test_unscorable_predictions_are_errors(probs, y, reason):
    with pytest.raises(EvaluationError, match=reason):
        evaluate(y, probs, CLASSES)


def test_checks_compare_with_thresholds_baseline_and_serving():
    candidate = Evaluation(0.80, {"cat": 0.9, "dog": 0.7}, [[9, 1], [3, 7]], 20)
    serving = Evaluation(0.84, {"cat": 0.9, "dog": 0.8}, [[9, 1], [2, 8]], 20)
    checks = judge(candidate, baseline_accuracy=0.85, serving=serving, min_accuracy=0.75,
                   min_class_recall=0.75, min_gain_over_baseline=-0.02, max_drop_vs_serving=0.05)
    verdict = {(c.name, c.passed) for c in checks}
    assert verdict == {("min_accuracy", True), ("min_class_recall", True), ("min_class_recall", False),
                       ("min_gain_over_baseline", False), ("max_drop_vs_serving", True)}
    line = failure_line(checks)
    assert line == ("quality gate failed: recall of class 'dog' 0.700 < min_class_recall 0.75 "
                    "(and 1 more failed check(s))")
    worse = judge(candidate, baseline_accuracy=None, serving=serving, min_accuracy=None, min_class_recall=None,
                  min_gain_over_baseline=None, max_drop_vs_serving=0.03)
    assert not worse[0].passed and worse[0].value == pytest.approx(-0.04)


def test_unset_thresholds_check_nothing_and_nan_never_passes():
    ev = Evaluation(0.5, {}, [], 2)
    assert judge(ev, baseline_accuracy=None, serving=None, min_accuracy=None, min_class_recall=None,
                 min_gain_over_baseline=None, max_drop_vs_serving=0.1) == []  # nothing served: skipped
    assert failure_line([]) is None
    assert not at_least("min_accuracy", math.nan, 0.0, "accuracy").passed
    assert not at_least("min_accuracy", None, 0.0, "accuracy").passed
    no_baseline = judge(ev, baseline_accuracy=None, serving=None, min_accuracy=None, min_class_recall=None,
                        min_gain_over_baseline=-1.0, max_drop_vs_serving=None)
    assert not no_baseline[0].passed and "no from-scratch baseline" in no_baseline[0].detail


def test_time_to_accuracy_is_the_first_epoch_that_reaches_the_target():
    from pipeline.model.scoring import time_to_accuracy

    points = [(1, 0.5, 0.3), (2, 1.0, 0.7), (3, 1.5, 0.65), (4, 2.0, 0.9)]
    assert time_to_accuracy(points, 0.7) == 1.0
    assert time_to_accuracy(points, 0.9) == 2.0
    assert time_to_accuracy(points, 0.95) is None
    assert time_to_accuracy([], 0.1) is None


def _ctx(enforce: bool, limit):
    from types import SimpleNamespace

    from pipeline.config import DeployConfig

    notes: list[str] = []
    cfg = DeployConfig.model_validate({"gate": {"enforce": enforce, "max_quantization_drop": limit}})
    return SimpleNamespace(config=cfg, reporter=SimpleNamespace(note=notes.append)), notes


def test_quantization_drop_is_checked_fail_closed():
    import pytest

    from pipeline.errors import GateError
    from pipeline.stages.export import check_quantization

    ctx, _ = _ctx(True, 0.01)
    check_quantization(ctx, {"mode": "int8", "accuracy": {"drop": 0.005}})  # within the bar
    check_quantization(ctx, {"mode": "int8", "accuracy": {"drop": -0.02}})  # better than float32
    with pytest.raises(GateError, match=r"quantized \(int8\) held-out accuracy dropped by 0.050 > "
                                        r"max_quantization_drop 0.01"):
        check_quantization(ctx, {"mode": "int8", "accuracy": {"drop": 0.05}})
    for unmeasured in ({"mode": "int8", "accuracy": {"drop": float("nan")}}, {"mode": "float16"}):
        with pytest.raises(GateError, match="could not be measured"):
            check_quantization(ctx, unmeasured)
    ctx, notes = _ctx(False, 0.01)
    report = {"mode": "int8", "accuracy": {"drop": 0.05}}
    check_quantization(ctx, report)
    assert report["gate_overridden"] is True and "exported anyway (gate.enforce = false)" in notes[0]
    ctx, _ = _ctx(True, None)
    check_quantization(ctx, {"mode": "int8", "accuracy": {"drop": 0.5}})  # no bar set: not checked


def test_promote_verdict_fails_closed():
    import math

    from pipeline.config import GateConfig
    from pipeline.verify.promote_gate import accuracy, promote_verdict

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(probs, np.array([0, 1, 1])) == 2 / 3
    assert math.isnan(accuracy(np.array([[np.nan, 0.1]]), np.array([0])))
    assert math.isnan(accuracy(probs, np.array([], np.int64)))
    cfg = GateConfig(min_accuracy=0.5, max_drop_vs_serving=0.02)
    assert promote_verdict(cfg, 0.8, 0.81, 64).ok
    v = promote_verdict(cfg, 0.7, 0.8, 64)
    assert not v.ok and "canary accuracy 0.700 is 0.100 below stable's 0.800 (> max_drop_vs_serving 0.02)" in v.reason
    v = promote_verdict(cfg, math.nan, 0.8, 64)
    assert not v.ok and "canary accuracy nan < min_accuracy 0.5" in v.reason
    # a broken stable (NaN outputs, errors) is no bar: min_accuracy decides, and without it nothing does
    assert promote_verdict(cfg, 0.9, math.nan, 64).ok and not promote_verdict(cfg, 0.4, math.nan, 64).ok
    only_drop = GateConfig(max_drop_vs_serving=0.02)
    v = promote_verdict(only_drop, 0.9, math.nan, 64)
    assert not v.ok and "no gate.min_accuracy is set" in v.reason
    lenient = GateConfig(min_accuracy=0.95, enforce=False)
    v = promote_verdict(lenient, 0.9, None, 64)
    assert v.ok and v.report["overridden"] and "promoted anyway" in v.reason


def test_curve_records_the_weights_early_stopping_restores():
    """Early stopping's restore_best_weights runs at train end: the curve's last point must
    be the restored model (same epoch count), or the next phase seems to start with a drop."""
    import keras

    from pipeline.model.scoring import Curve, quick_accuracy

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(5.0), "sparse_categorical_crossentropy")  # lr so high the loss jumps

    class Diverge(keras.callbacks.Callback):  # after the first epoch, push the weights far off the best
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch >= 1:
                self.model.set_weights([w * -3.0 for w in self.model.get_weights()])
                logs["loss"] = 1e9  # so the early stop keeps epoch 1's weights as the best

    curve = Curve(0.0)
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    model.fit(x, y, epochs=10, verbose=0, callbacks=[Diverge(), stop, curve.callback(model, x, y)])
    epochs = [e for e, _, _ in curve.points]
    assert epochs[-1] == epochs[-2] == stop.stopped_epoch + 1  # the extra point has the last epoch's number
    assert curve.points[-1][2] == quick_accuracy(model, x, y) != curve.points[-2][2]
    follow = curve.callback(model, x, y)  # a next phase numbers on from the last epoch, not the point count
    follow.on_epoch_end(0)
    assert curve.points[-1][0] == epochs[-1] + 1


def test_a_broken_stable_is_no_bar_and_the_absolute_checks_decide():
    """Issue 27 (9): a stable that answers NaN must not block its own fix; with no absolute
    check configured the gate still fails closed, saying how to replace it."""
    from pipeline.model.quality import judge

    good = evaluate(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 1, 0]], ["a", "b"])
    why = "the served stable v4 cannot be scored on the held-out set: non-finite"
    checks = judge(good, baseline_accuracy=None, serving=None, min_accuracy=0.5, min_class_recall=None,
                   min_gain_over_baseline=None, max_drop_vs_serving=0.02, serving_broken=why)
    assert [c.name for c in checks] == ["min_accuracy", "max_drop_vs_serving"] and all(c.passed for c in checks)
    assert "min_accuracy 0.5) decides" in checks[1].detail
    alone = judge(good, baseline_accuracy=None, serving=None, min_accuracy=None, min_class_recall=None,
                  min_gain_over_baseline=None, max_drop_vs_serving=0.02, serving_broken=why)
    assert not alone[0].passed and "set gate.min_accuracy" in alone[0].detail

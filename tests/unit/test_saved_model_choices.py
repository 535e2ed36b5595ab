"""The pure choices behind a SavedModel base: which output, which variables, which names."""

import numpy as np
import pytest

from pipeline.errors import ModelLoadError, TransferError
from pipeline.model.freeze import variables_to_train
from pipeline.model.source_health import looks_like_probabilities

NAMES = ["block_1/kernel:0", "block_1/bias:0", "bn/moving_mean:0", "head/kernel:0"]
MAY_TRAIN = [True, True, False, True]


def test_unset_patterns_train_every_trainable_variable_and_patterns_pick_some():
    assert variables_to_train(NAMES, MAY_TRAIN, None, "hub") == [0, 1, 3]
    assert variables_to_train(NAMES, MAY_TRAIN, ["^head/", "bias"], "hub") == [1, 3]
    assert variables_to_train(NAMES, MAY_TRAIN, [], "hub") == []
    assert variables_to_train(NAMES, MAY_TRAIN, ["."], "hub") == [0, 1, 3]  # never a non-trainable one


def test_a_pattern_matching_no_trainable_variable_is_an_error_listing_them():
    with pytest.raises(TransferError) as err:
        variables_to_train(NAMES, MAY_TRAIN, ["moving_mean"], "hub (signature 'serving_default')")
    assert str(err.value) == ("transfer.unfreeze_variables: 'moving_mean' matches none of hub (signature "
                              "'serving_default')'s 3 trainable variables (block_1/kernel:0, block_1/bias:0, "
                              "head/kernel:0)")


def test_output_choice_and_optimizer_safe_names():
    from pipeline.model.saved_model_base import pick_output, safe_variable_name, unique_names

    assert pick_output(["feature_vector"], None, "m") == "feature_vector"
    assert pick_output(["a", "b"], "b", "m") == "b"
    with pytest.raises(ModelLoadError, match=r"m has 2 outputs \(a, b\); set model.output_key"):
        pick_output(["b", "a"], None, "m")
    assert safe_variable_name("Conv1/kernel:0") == "Conv1_kernel_0"
    assert unique_names(["kernel", "kernel", "bias", "kernel"]) == ["kernel", "kernel_1", "bias", "kernel_2"]


def test_probability_rows_are_recognised():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 10))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert looks_like_probabilities(softmax)
    assert not looks_like_probabilities(logits) and not looks_like_probabilities(np.abs(logits))
    assert not looks_like_probabilities(np.ones((20, 1)))

"""The source model check before training: collapsed features are refused with a cause."""

import numpy as np
import pytest

from pipeline.model import source_health
from pipeline.model.source_health import BatchNormState, assess

UNSET = BatchNormState(layers=3, near_initial=3)


def test_varied_features_pass_and_barely_varied_ones_warn():
    rng = np.random.default_rng(0)
    good = assess(rng.normal(size=(40, 7, 7, 8)), BatchNormState(), "none", "pool")
    assert good.error is None and not good.warnings and good.alive_fraction == 1.0
    few = np.zeros((40, 200))
    few[:, 0] = rng.normal(size=40)  # 1 of 200 dimensions varies
    warned = assess(few, UNSET, "none", "pool")
    assert warned.error is None and len(warned.warnings) == 1 and "1 of 200" in warned.warnings[0]


@pytest.mark.parametrize("offset", [0.0, 3.5])
def test_constant_features_are_refused_naming_batchnorm_when_the_base_has_it(offset):
    same = np.full((64, 32), offset) + np.random.default_rng(1).normal(scale=1e-12, size=(64, 32))
    health = assess(same, UNSET, "symmetric", "global_pool")
    assert health.error is not None and "same for all 64" in health.error and "global_pool" in health.error
    assert "BatchNorm" in health.error and "3 of 3" in health.error and "'symmetric'" in health.error
    trained = assess(same, BatchNormState(layers=3), "none", "global_pool")
    assert trained.error is not None and "never estimated" not in trained.error and "3 layers" in trained.error
    without_bn = assess(same, BatchNormState(), "none", "global_pool")
    assert without_bn.error is not None and "BatchNorm" not in without_bn.error


def test_nan_features_are_refused_and_one_class_is_found():
    features = np.ones((10, 4))
    features[3, 1] = np.nan
    health = assess(features, BatchNormState(), "none", "cut")
    assert health.error is not None and "NaN/Inf for 1 of 10" in health.error
    assert source_health.one_class(np.tile([[0.1, 0.9]], (5, 1))) == 1
    assert source_health.one_class(np.array([[0.1, 0.9], [0.8, 0.2]])) is None
    assert source_health.one_class(np.ones((5, 1))) is None  # a single output: nothing to say


def test_sample_positions_are_spread_and_bounded():
    assert list(source_health.sample_positions(5, 8)) == [0, 1, 2, 3, 4]
    picked = source_health.sample_positions(10_000, 128)
    assert len(picked) == 128 and picked[0] == 0 and picked[-1] == 9_999 and len(set(picked)) == 128

"""--max_run_bytes (issue 22, item 2), in process on real SavedModels: a run's peak is
measured from TensorFlow's allocation records, a large request runs in parts whose
outputs are exactly those of running the parts alone (and match one whole run), and
a request whose outputs or single example do not fit is refused before it runs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.modelserver.errors import ServingError
from serving.modelserver.runmem import RunPlanner, input_bytes, plan_parts, profile_key
from serving.modelserver.servable import SavedModelServable

from .zoo import write_cnn

MIB = 1 << 20


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    path = write_cnn(tmp_path_factory.mktemp("runmem"))
    servable = SavedModelServable("cnn", 1, path)
    yield servable
    servable.close()


class Spy:
    """Counts the untraced runs a planner makes and the rows of each."""

    def __init__(self, servable):
        self.servable, self.rows = servable, []
        self._run = servable.run

    def __enter__(self):
        def run(signature, inputs, outputs=None):
            self.rows.append(next(iter(inputs.values())).shape[0])
            return self._run(signature, inputs, outputs)

        self.servable.run = run
        return self

    def __exit__(self, *exc):
        del self.servable.run  # back to the class's method


def test_measured_peak_grows_with_the_batch_and_matches_the_activations(cnn):
    peaks = {}
    for rows in (64, 256):
        x = np.zeros((rows, 8, 8, 1), np.float32)
        _, peaks[rows] = cnn.run_measured("", {"inputs": x})
    # conv1 (32 ch) and conv2 (64 ch) outputs of [rows, 8, 8, ·] float32 are live together
    assert peaks[256] >= 256 * 8 * 8 * (32 + 64) * 4
    assert 3.5 <= peaks[256] / peaks[64] <= 4.5, peaks


def test_large_request_runs_in_parts_identical_to_the_parts_run_alone(cnn):
    planner = RunPlanner(4 * MIB)
    x = np.random.default_rng(0).random((4096, 8, 8, 1), dtype=np.float32)
    with Spy(cnn) as spy:
        got = planner.run(cnn, "", {"inputs": x})["probabilities"]
    profile = planner.profiles(cnn).get(profile_key(cnn, "", None, {"inputs": x}))
    assert profile is not None and profile.run_per_byte > 50  # the CNN: ~96 bytes of tensors per input byte
    step = plan_parts(profile, input_bytes({"inputs": x}), 4096, 4 * MIB)
    assert len(spy.rows) == -(-4096 // step) > 4 and spy.rows[:-1] == [step] * (len(spy.rows) - 1)
    parts = np.concatenate([cnn.run("", {"inputs": x[i:i + step]})["probabilities"]
                            for i in range(0, 4096, step)])
    assert got.shape == (4096, 10) and np.array_equal(got, parts)
    np.testing.assert_allclose(got, cnn.run("", {"inputs": x})["probabilities"], rtol=0, atol=1e-6)
    _, part_peak = cnn.run_measured("", {"inputs": x[:step]})
    assert part_peak <= 4 * MIB, f"one part used {part_peak / MIB:.1f} MiB"


def test_small_requests_run_at_once_unmeasured(cnn):
    planner = RunPlanner(32 * MIB)
    x = np.zeros((16, 8, 8, 1), np.float32)  # 16 KiB: below budget / 1024
    fresh = SavedModelServable("cnn", 1, cnn.path)
    with Spy(fresh) as spy:
        planner.run(fresh, "", {"inputs": x})
    assert spy.rows == [16] and planner.profiles(fresh).get(profile_key(fresh, "", None, {"inputs": x})) is None
    fresh.close()


def test_a_measured_run_charges_its_cost_before_it_starts(cnn):
    """Issue 27 item 4: the in-flight budget counts what a request will use while it runs
    (one part's tensors and the joined result), charged before anything runs; a charge
    that does not fit stops the run."""
    planner = RunPlanner(4 * MIB)
    x = np.zeros((4096, 8, 8, 1), np.float32)
    charged: list[int] = []
    planner.run(cnn, "", {"inputs": x}, charge=charged.append)  # probe, then parts
    profile = planner.profiles(cnn).get(profile_key(cnn, "", None, {"inputs": x}))
    assert profile is not None
    step = plan_parts(profile, x.nbytes, 4096, 4 * MIB)
    result = 4096 * 10 * 4
    assert len(charged) == 1
    assert charged[0] == pytest.approx(profile.run_per_byte * x.nbytes * step / 4096 + result, rel=1e-6)
    assert result < charged[0] <= 4 * MIB + 2 * result

    whole: list[int] = []
    small = x[:64]  # measured now (same profile key), fits one run: its own estimate
    planner.run(cnn, "", {"inputs": small}, charge=whole.append)
    assert whole == [int(profile.run_per_byte * small.nbytes)] and whole[0] > 50 * small.nbytes

    def full(n: int) -> None:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, "budget full")

    with Spy(cnn) as spy, pytest.raises(ServingError) as err:
        planner.run(cnn, "", {"inputs": x}, charge=full)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and spy.rows == []


def test_outputs_or_one_example_over_the_budget_are_refused_before_running(cnn):
    x = np.zeros((4096, 8, 8, 1), np.float32)  # outputs: 4096 × 10 float32 = 160 KiB
    with pytest.raises(ServingError) as err, Spy(cnn) as spy:
        RunPlanner(128 * 1024).run(cnn, "", {"inputs": x})
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "outputs of this request" in err.value.message and "--max_run_bytes" in err.value.message
    assert RunPlanner(128 * 1024, 4 * MIB).run(cnn, "", {"inputs": x[:2048]})["probabilities"].shape == (2048, 10)
    assert spy.rows == []  # only the traced probe ran
    big = np.zeros((4, 64, 64, 1), np.float32)  # one example: ~1.5 MiB of tensors
    with pytest.raises(ServingError) as err:
        RunPlanner(1 * MIB).run(cnn, "", {"inputs": big})
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "One example" in err.value.message


class _Total(tf.Module):
    """An output that is not per row: the sum over the whole batch."""

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def serve(self, x):
        return {"total": tf.reduce_sum(tf.nn.relu(tf.matmul(x, tf.ones([64, 256])))),
                "rows": tf.shape(x)[0]}


def test_outputs_not_batched_along_dimension_0_are_never_split(tmp_path):
    module = _Total()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    servable = SavedModelServable("total", 1, tmp_path / "1")
    x = np.random.default_rng(1).random((2048, 64), dtype=np.float32)  # 512 KiB in, 2 MiB of matmul
    out = RunPlanner(64 * MIB).run(servable, "", {"x": x})  # fits: one whole run
    assert int(out["rows"]) == 2048
    np.testing.assert_allclose(out["total"], servable.run("", {"x": x})["total"], rtol=1e-6)
    with pytest.raises(ServingError) as err:
        RunPlanner(1 * MIB).run(servable, "", {"x": x})  # does not fit, cannot be split
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "not batched along dimension 0" in err.value.message
    servable.close()


def test_max_run_bytes_flag_default_and_checks():
    from serving.modelserver.flags import parse_flags

    assert parse_flags(["--model_base_path=/m"]).run_bytes == 32 * MIB
    assert parse_flags(["--model_base_path=/m", "--max_inflight_request_bytes=50331648"]).run_bytes == 16 * MIB
    assert parse_flags(["--model_base_path=/m", "--max_inflight_request_bytes=4294967296"]).run_bytes == 128 * MIB
    assert parse_flags(["--model_base_path=/m", "--max_run_bytes=5000000"]).run_bytes == 5000000
    with pytest.raises(SystemExit, match="--max_run_bytes must be 0"):
        parse_flags(["--model_base_path=/m", "--max_run_bytes=-1"])

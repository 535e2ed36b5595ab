"""`tfrollout verify | predict | loadtest` end to end against the fake server (in-process CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.client.conftest import GOLDEN_REL, Served
from tests.support.procs import free_port


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no deploy.toml, an empty run record
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def _common(served: Served) -> list[str]:
    return ["--target", served.target, "--model", served.model]


def test_verify_passes_against_the_same_model(cli, served: Served) -> None:
    result = cli("verify", *_common(served), "--version", "1", "--golden",
                 str(served.base / "1" / GOLDEN_REL), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["max_abs_diff"] <= 1e-6 and report["agreement"] == 1.0
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"] > 0


def test_verify_fails_against_a_different_model(cli, served: Served) -> None:
    result = cli("verify", *_common(served), "--label", "canary", "--golden", str(served.base / "1"),
                 "--json")
    assert result.exit_code == 8
    report = json.loads(result.stdout)
    assert not report["ok"] and report["worst"]["output"] == "probabilities"
    assert "differs at index" in result.stderr and "'probabilities'" in result.stderr


def test_verify_without_golden_or_export_is_one_line(cli, served: Served) -> None:
    result = cli("verify", *_common(served))
    assert result.exit_code == 8
    assert result.stderr.strip().startswith("error: no --golden given")
    assert len(result.stderr.strip().splitlines()) == 1


def test_verify_unreachable_target(cli, served: Served) -> None:
    port = free_port()
    result = cli("verify", "--target", f"127.0.0.1:{port}", "--model", served.model, "--version", "1",
                 "--golden", str(served.base / "1"), "--deadline", "2")
    assert result.exit_code == 8
    assert f"cannot reach 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_npy_to_npz(cli, served: Served, tmp_path) -> None:
    x = np.load(served.base / "1" / GOLDEN_REL)["input.inputs"][:3]
    np.save(tmp_path / "x.npy", x)
    result = cli("predict", *_common(served), "--version", "1", "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "y.npz"))
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "y.npz")["output.probabilities"]
    np.testing.assert_allclose(saved, np.load(served.base / "1" / GOLDEN_REL)["output.probabilities"][:3],
                               atol=1e-6)


def test_predict_json_is_cast_and_printed(cli, served: Served, tmp_path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"inputs": np.zeros((1, 8, 8, 1)).tolist()}))
    result = cli("predict", *_common(served), "--label", "stable", "--input", str(tmp_path / "x.json"),
                 "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["outputs"]["probabilities"]
    assert out["shape"] == [1, 5] and abs(sum(out["values"][0]) - 1) < 1e-5


def test_predict_wrong_dtype_names_the_input(cli, served: Served, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float64))
    result = cli("predict", *_common(served), "--input", str(tmp_path / "x.npy"))
    assert result.exit_code == 8
    assert "input 'inputs' expects DT_FLOAT [-1,8,8,1], got DT_DOUBLE [1,8,8,1]" in result.stderr


def test_predict_unknown_model(cli, served: Served, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    result = cli("predict", "--target", served.target, "--model", "ghost", "--input", str(tmp_path / "x.npy"))
    assert result.exit_code == 8 and "'ghost'" in result.stderr


def test_loadtest_count_bound(cli, served: Served) -> None:
    result = cli("loadtest", *_common(served), "--version", "1", "--count", "30", "--concurrency", "3",
                 "--batch", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 30 and data["ok"] is True and data["errors"] == {}
    assert data["qps"] > 0 and {"p50", "p95", "p99"} <= set(data["latency_ms"])


def test_loadtest_duration_bound_stops_by_itself(cli, served: Served) -> None:
    result = cli("loadtest", *_common(served), "--duration", "0.5", "--concurrency", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 0.4 < data["elapsed_s"] < 3.0 and data["requests"] > 0


def _manifest(tmp_path, served: Served, classes: list[str], mode: str) -> None:
    folder = tmp_path / "exports" / served.model / "1"
    folder.mkdir(parents=True)
    (folder / "tfrollout.json").write_text(json.dumps({"classes": classes, "preprocess": {"mode": mode}}))


def test_predict_names_the_classes_and_takes_integer_pixels_for_a_raw_pixel_signature(cli, served: Served,
                                                                                       tmp_path) -> None:
    x = np.load(served.base / "1" / GOLDEN_REL)["input.inputs"][:2]
    names = ["ant", "bee", "cat", "dog", "eel"]
    _manifest(tmp_path, served, names, "raw")
    np.save(tmp_path / "x.npy", np.round(x).astype(np.uint8))
    result = cli("predict", *_common(served), "--version", "1", "--input", str(tmp_path / "x.npy"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classes"] == names and len(report["predicted"]) == 2
    served_values = np.asarray(report["outputs"]["probabilities"]["values"])
    for row, text in enumerate(report["predicted"]):
        best = int(np.argmax(served_values[row]))
        assert text == f"{names[best]} ({served_values[row, best]:.3f})"
    human = cli("predict", *_common(served), "--version", "1", "--input", str(tmp_path / "x.npy"))
    assert human.exit_code == 0 and "row 0: " in human.stdout and "row 1: " in human.stdout


def test_predict_refuses_integer_pixels_for_a_signature_in_the_loaders_scale(cli, served: Served, tmp_path) -> None:
    _manifest(tmp_path, served, ["a", "b", "c", "d", "e"], "none")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.uint8))
    result = cli("predict", *_common(served), "--version", "1", "--input", str(tmp_path / "x.npy"))
    assert result.exit_code == 8 and "pixels / 255" in result.stderr

"""Fresh checkouts sharing a store get distinct versions: the export and push stages for real
(a tiny Keras model, TensorFlow export), against a file:// store and a moto S3 process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import DeployConfig, build_config
from pipeline.errors import ExportError, StorageError
from pipeline.progress import Reporter
from pipeline.results import ExportOutput, LoadOutput, PushOutput, TransferOutput
from pipeline.run import RunRecord, run_pipeline, save_record
from pipeline.storage import open_store
from pipeline.storage.reserve import read_reservation
from tests.storage.conftest import MotoServer
from tests.support.cli import TFROLLOUT
from tests.support.deploy_cli import quick_transfer_env
from tests.support.procs import free_port
from tests.support.results import finished, sample_output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Keras model and its held-out inputs: what the transfer stage hands to export."""
    import keras

    root = tmp_path_factory.mktemp("tiny")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="inputs")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4)(inputs)))
    model.save(root / "t.keras")
    np.savez(root / "h.npz", x=np.random.default_rng(0).random((8, 8), dtype=np.float32), y=np.zeros(8))
    return root / "t.keras", root / "h.npz"


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "file":
        return {"uri": f"file://{tmp_path}/shared-store"}
    moto: MotoServer = request.getfixturevalue("moto")
    return {"uri": f"s3://{request.getfixturevalue('bucket')}/models", "endpoint_url": moto.endpoint,
            "addressing_style": "path", "max_attempts": 2, "connect_timeout_s": 1.0}


def checkout(root: Path, trained: tuple[Path, Path], storage: dict[str, Any], **export: Any) -> DeployConfig:
    """A fresh clone: its own workdir and export folder, a run record whose transfer finished."""
    model_path, heldout = trained
    cfg = build_config({"run": {"workdir": str(root / ".tfrollout")},
                        "export": {"root": str(root / "exports"), "warmup_records": 1, "golden_size": 4,
                                   "parity_atol": 1e-4, **export},
                        "storage": storage})
    record = RunRecord.new(cfg)
    record.stages["load"] = finished(LoadOutput(path=model_path, format="keras", sha256="0" * 64,
                                                input_shape=[8], cut_layer=None, feature_shape=[4],
                                                num_layers=3))
    record.stages["transfer"] = finished(TransferOutput(model_path=model_path, heldout=heldout,
                                                        report=root / "r.json", classes=["a", "b", "c"],
                                                        strategy="full", test_accuracy=1.0,
                                                        baseline_accuracy=None))
    record.stages["gate"] = finished(sample_output("gate"))
    save_record(cfg, record)
    return cfg


def stage(cfg: DeployConfig, name: str) -> Any:
    summary = run_pipeline(cfg, Reporter(quiet=True), from_stage=name, until_stage=name)
    return summary.record.output(ExportOutput if name == "export" else PushOutput)


def committed(storage: dict[str, Any]) -> list[int]:
    return [v.version for v in open_store(build_config({"storage": storage}).storage).committed_versions("digits")]


def test_two_fresh_checkouts_in_turn_get_versions_1_and_2(tmp_path: Path, trained, storage) -> None:
    a, b = checkout(tmp_path / "a", trained, storage), checkout(tmp_path / "b", trained, storage)
    assert stage(a, "export").version == 1 and stage(a, "push").version == 1
    exported = stage(b, "export")
    assert exported.version == 2  # b's own exports/ is empty: the number came from the store
    assert sorted(p.name for p in (tmp_path / "b" / "exports" / "digits").iterdir()) == ["2"]
    pushed = stage(b, "push")
    assert pushed.version == 2 and not pushed.already_committed
    assert committed(storage) == [1, 2]


def test_two_fresh_checkouts_interleaved_both_commit(tmp_path: Path, trained, storage) -> None:
    a, b = checkout(tmp_path / "a", trained, storage), checkout(tmp_path / "b", trained, storage)
    assert (stage(a, "export").version, stage(b, "export").version) == (1, 2)  # a's reservation counts
    store = open_store(a.storage)
    assert read_reservation(store, "digits", 1) is not None and read_reservation(store, "digits", 2) is not None
    assert stage(b, "push").version == 2 and stage(a, "push").version == 1
    assert committed(storage) == [1, 2]
    assert read_reservation(store, "digits", 1) is None and read_reservation(store, "digits", 2) is None


def test_pinned_version_already_committed_is_refused_at_export(tmp_path: Path, trained, storage) -> None:
    a = checkout(tmp_path / "a", trained, storage)
    stage(a, "export"), stage(a, "push")
    pinned = checkout(tmp_path / "b", trained, storage, version=1)
    with pytest.raises(ExportError) as err:
        stage(pinned, "export")
    assert "digits version 1 is already committed" in str(err.value) and "next free number (2)" in str(err.value)
    assert not (tmp_path / "b" / "exports").exists()
    assert stage(checkout(tmp_path / "c", trained, storage, version=5), "export").version == 5


def test_a_failed_export_gives_its_number_back(tmp_path: Path, trained, storage) -> None:
    poisoned = tmp_path / "nan.npz"
    np.savez(poisoned, x=np.full((8, 8), np.nan, np.float32), y=np.zeros(8))
    a = checkout(tmp_path / "a", (trained[0], poisoned), storage)
    with pytest.raises(ExportError, match="non-finite"):  # the export itself fails, after the reservation
        stage(a, "export")
    assert read_reservation(open_store(a.storage), "digits", 1) is None
    assert stage(checkout(tmp_path / "b", trained, storage), "export").version == 1


def test_unreachable_store_stops_the_export_in_one_line(tmp_path: Path, trained) -> None:
    dead = {"uri": "s3://nowhere/models", "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "addressing_style": "path", "max_attempts": 1, "connect_timeout_s": 0.5}
    cfg = checkout(tmp_path / "a", trained, dead)
    with pytest.raises(StorageError) as err:
        stage(cfg, "export")
    message = str(err.value)
    assert message.startswith("export cannot number digits from the store s3://nowhere/models: cannot reach")
    assert "export.version_from_store = false" in message and "\n" not in message
    assert not (tmp_path / "a" / "exports").exists()
    local = checkout(tmp_path / "b", trained, dead, version_from_store=False)
    assert stage(local, "export").version == 1  # explicitly no store: numbered from the local folder


def test_missing_bucket_fails_the_export_unless_it_may_be_created(tmp_path: Path, trained,
                                                                   moto: MotoServer) -> None:
    storage = {"uri": "s3://not-made-yet/models", "endpoint_url": moto.endpoint, "addressing_style": "path",
               "max_attempts": 2}
    with pytest.raises(StorageError, match="bucket 'not-made-yet' does not exist"):
        stage(checkout(tmp_path / "a", trained, storage), "export")
    made = checkout(tmp_path / "b", trained, {**storage, "create_bucket": True})
    assert stage(made, "export").version == 1 and stage(made, "push").version == 1
    assert committed({**storage, "create_bucket": True}) == [1]


def test_pinned_version_with_a_local_directory_is_refused_before_reserving(tmp_path: Path, trained,
                                                                           storage) -> None:
    cfg = checkout(tmp_path / "a", trained, storage, version=3)
    (tmp_path / "a" / "exports" / "digits" / "3").mkdir(parents=True)
    with pytest.raises(ExportError, match="version 3 already exists"):
        stage(cfg, "export")
    assert read_reservation(open_store(cfg.storage), "digits", 3) is None
    (tmp_path / "a" / "exports" / "digits" / "3").rmdir()
    assert stage(cfg, "export").version == 3 and stage(cfg, "push").version == 3  # the resumed run


@pytest.mark.e2e
def test_cli_deploy_from_two_fresh_dirs_against_one_s3_store(tmp_path: Path, moto: MotoServer,
                                                             demo_source_model: Path) -> None:
    """`tfrollout deploy --until push` in two fresh directories at once, one bucket: versions 1 and 2."""
    env = quick_transfer_env(demo_source_model, TFROLLOUT_STORAGE__URI="s3://ci-shared/models",
                             TFROLLOUT_STORAGE__ENDPOINT_URL=moto.endpoint,
                             TFROLLOUT_STORAGE__ADDRESSING_STYLE="path", TFROLLOUT_STORAGE__CREATE_BUCKET="true")
    dirs = [tmp_path / "job1", tmp_path / "job2"]
    procs = []
    for d in dirs:
        d.mkdir()
        procs.append(subprocess.Popen([TFROLLOUT, "deploy", "--json", "--until", "push"], cwd=d, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    versions = sorted(r["stages"]["push"]["outputs"]["version"] for r in reports)
    assert versions == [1, 2]
    for report in reports:
        assert report["stages"]["export"]["outputs"]["version"] == report["stages"]["push"]["outputs"]["version"]
        assert not report["stages"]["push"]["outputs"]["already_committed"]
    keys = {o["Key"] for o in moto.client().list_objects_v2(Bucket="ci-shared")["Contents"]}
    assert {"models/digits/1/tfrollout.manifest.json", "models/digits/2/tfrollout.manifest.json"} <= keys
    assert not any(k.startswith("models/.reserved/") for k in keys)  # the commits gave the numbers up

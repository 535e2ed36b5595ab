"""The load stage against real files: every supported format, every bad input."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ModelLoadError
from pipeline.model.source import detect_format, load_source_model


def test_keras_file_loads_with_cut_layer(demo_source_model: Path):
    source = load_source_model(demo_source_model, "features")
    assert source.format == "keras" and source.cut_layer == "features"
    assert len(source.sha256) == 64


def test_default_cut_is_layer_before_last(demo_source_model: Path):
    assert load_source_model(demo_source_model, None).cut_layer == "features"


def test_h5_reloads_with_identical_predictions(demo_source_model: Path, tmp_path: Path):
    keras_model = load_source_model(demo_source_model, "features").model
    h5 = tmp_path / "model.h5"
    keras_model.save(h5)
    reloaded = load_source_model(h5, "features")
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    assert reloaded.format == "h5"
    np.testing.assert_allclose(reloaded.model.predict(x, verbose=0), keras_model.predict(x, verbose=0),
                               atol=1e-6)


def test_saved_model_dir_loads_as_frozen_base(demo_source_model: Path, tmp_path: Path):
    keras_model = load_source_model(demo_source_model, "features").model
    out = tmp_path / "sm"
    keras_model.export(out, format="tf_saved_model", verbose=False)
    source = load_source_model(out, None)
    assert source.format == "saved_model" and source.cut_layer is None
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(source.model.predict(x, verbose=0), keras_model.predict(x, verbose=0),
                               atol=1e-5)
    with pytest.raises(ModelLoadError, match="no named layers"):
        load_source_model(out, "features")


def test_missing_file(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"model not found: .*nope\.keras$"):
        load_source_model(tmp_path / "nope.keras", "features")
    with pytest.raises(ModelLoadError, match=r"demo/source_model\.keras \(the demo's source model: make it with "
                                             r"`tfrollout demo source-model --out .*demo/source_model\.keras`\)"):
        load_source_model(tmp_path / "demo" / "source_model.keras", "features")


def test_wrong_extension(tmp_path: Path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00")
    with pytest.raises(ModelLoadError, match=r"unsupported model file extension '\.pt'"):
        detect_format(path)


def test_directory_without_saved_model(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        detect_format(tmp_path)


def test_corrupt_keras_archive(tmp_path: Path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ModelLoadError, match=r"broken\.keras: not a valid \.keras archive"):
        load_source_model(path, "features")


def test_truncated_keras_archive(demo_source_model: Path, tmp_path: Path):
    data = demo_source_model.read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.keras") as err:
        load_source_model(path, "features")
    assert "not a complete zip" in str(err.value) and "not found" not in str(err.value).lower()


def test_keras_archive_with_a_damaged_member(demo_source_model: Path, tmp_path: Path):
    data = bytearray(demo_source_model.read_bytes())
    middle = len(data) // 2  # flip bytes inside a compressed member: the central directory stays intact
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"damaged\.keras: not a valid \.keras archive"):
        load_source_model(path, "features")


def test_h5_without_hdf5_signature(tmp_path: Path):
    path = tmp_path / "fake.h5"
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(ModelLoadError, match="no HDF5 signature"):
        load_source_model(path, None)


def test_unknown_cut_layer_names_it_and_lists_layers(demo_source_model: Path):
    with pytest.raises(ModelLoadError, match=r"no layer named 'penultimate'.*features"):
        load_source_model(demo_source_model, "penultimate")


@pytest.mark.parametrize("build, expected", [
    (lambda keras: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=3), "avg_pool"),
    # MobileNetV2 names its pooling layer automatically (a counter per process): the expected cut is
    # whichever layer feeds the classifier ("predictions"), read from the model itself
    (lambda keras: keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=3),
     lambda model: model.get_layer("predictions").input._keras_history.operation.name),
    (lambda keras: keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="hidden"),
                                     keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(2, name="cls"),
                                     keras.layers.Softmax(name="sm")]), "hidden"),
    (lambda keras: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c1"),
                                     keras.layers.Conv2D(2, 3, name="c2"),
                                     keras.layers.GlobalAveragePooling2D(name="gap")]), "c2"),
])
def test_default_cut_is_the_input_of_the_classifier(tmp_path: Path, build, expected):
    import keras

    path = tmp_path / "model.keras"
    model = build(keras)
    model.save(path)
    want = expected(model) if callable(expected) else expected
    assert want.startswith(("avg_pool", "global_average_pooling2d", "hidden", "c2"))
    assert load_source_model(path, None).cut_layer == want


def test_a_zip_bomb_named_keras_is_refused_before_inflating(tmp_path: Path):
    """A 1 GiB config.json deflated into a few MB: refused from the central directory alone,
    fast and without the memory of inflating it (exit 3 through the CLI's ModelLoadError)."""
    import resource
    import time
    import zipfile

    path = tmp_path / "bomb.keras"
    chunk = b" " * (8 * 2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("config.json", "w", force_zip64=True) as member:
            for _ in range(128):  # 1 GiB of spaces, written in 8 MiB pieces
                member.write(chunk)
        archive.writestr("metadata.json", "{}")
    assert path.stat().st_size < 8 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"bomb\.keras: refused: member config\.json would inflate to "
                                             r"1,073,741,824 bytes"):
        load_source_model(path, None)
    assert time.monotonic() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: < 100 MB more


@pytest.mark.parametrize("members, refused", [
    ([("config.json", 5_000, 900), ("model.weights.h5", 90 * 2**20, 82 * 2**20)], None),  # a real model
    ([("config.json", 65 * 2**20, 2**20)], "limit 67,108,864 for JSON"),
    ([("model.weights.h5", 2**30, 2**20)], "inflate 1,024x"),
    ([("assets/vocab.txt", 15 * 2**20, 1000)], None),  # small members may compress well
])
def test_archive_limits(members, refused):
    from pipeline.model.source import archive_limit_problem

    problem = archive_limit_problem(members)
    assert (problem is None) if refused is None else (refused in problem)

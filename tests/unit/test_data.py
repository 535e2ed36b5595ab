from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError
from pipeline.model.data import (
    demo_source_domain,
    demo_target_domain,
    encode_labels,
    few_shot_indices,
    fit_to_input,
    load_image_dir,
    split_dataset,
    stratified_split,
)
from pipeline.model.npz_source import load_npz


def test_stratified_split_keeps_every_class_on_both_sides():
    y = np.repeat(np.arange(4), 10)
    train, test = stratified_split(y, 0.3, seed=1)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(y)
    for label in range(4):
        assert np.sum(y[test] == label) == 3
        assert np.sum(y[train] == label) == 7


def test_few_shot_takes_exactly_k_per_class_and_is_seeded():
    y = np.repeat(np.arange(3), 20)
    picked = few_shot_indices(y, 5, seed=3)
    assert np.bincount(y[picked]).tolist() == [5, 5, 5]
    assert np.array_equal(picked, few_shot_indices(y, 5, seed=3))
    assert not np.array_equal(picked, few_shot_indices(y, 5, seed=4))


def test_demo_target_is_handwritten_digits_with_k_labels_and_a_disjoint_held_out_set():
    data = demo_target_domain(labels_per_class=2, test_fraction=0.3, seed=0)
    assert data.class_names == tuple("0123456789")
    assert np.bincount(data.y_train).tolist() == [2] * 10
    assert 500 < len(data.y_test) < 560 and np.bincount(data.y_test).min() >= 50  # 30 % of 1,797
    assert data.x_train.shape[1:] == (8, 8, 1) and data.x_train.max() <= 1.0
    train_rows = {x.tobytes() for x in data.x_train}
    assert not train_rows & {x.tobytes() for x in data.x_test}  # no labelled image is scored


def test_demo_source_is_printed_digits_that_look_like_the_handwritten_ones():
    """The source domain must share the target's scale and layout (8x8, [0, 1], ink high),
    else transfer has nothing to carry over: compare each class's mean image."""
    source = demo_source_domain(seed=0)
    target = demo_target_domain(labels_per_class=1, test_fraction=0.3, seed=0)
    assert source.class_names == target.class_names == tuple("0123456789")
    assert len(source.y_train) + len(source.y_test) >= 8000 and np.bincount(source.y_train).min() > 700
    assert source.x_train.shape[1:] == (8, 8, 1)
    assert 0.0 <= source.x_train.min() and source.x_train.max() <= 1.0 and np.isfinite(source.x_train).all()
    correlations = []
    for label in range(10):
        printed = source.x_train[source.y_train == label].mean(axis=0).ravel()
        written = target.x_test[target.y_test == label].mean(axis=0).ravel()
        correlations.append(np.corrcoef(printed, written)[0, 1])
    assert min(correlations) > 0.5, correlations


def test_encode_labels_sorts_original_values():
    encoded, names = encode_labels(np.array(["cat", "dog", "cat", "ant"]))
    assert names == ("ant", "cat", "dog")
    assert encoded.tolist() == [1, 2, 1, 0]


def test_fit_to_input_adds_missing_channel_and_rejects_other_shapes():
    assert fit_to_input(np.zeros((2, 8, 8)), (8, 8, 1), "x").shape == (2, 8, 8, 1)
    with pytest.raises(DataError, match=r"\(10, 10, 1\) does not fit the model input shape \(8, 8, 1\)"):
        fit_to_input(np.zeros((2, 10, 10, 1)), (8, 8, 1), "x.npz")


def test_npz_length_mismatch(tmp_path: Path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 8, 8, 1)), y=np.arange(9) % 2)
    with pytest.raises(DataError, match="x has 10 samples but y has 9 labels"):
        load_npz(path, (8, 8, 1), 0.3, 0)


def test_npz_missing_arrays_and_garbage(tmp_path: Path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 1)))
    with pytest.raises(DataError, match="missing array"):
        load_npz(path, (8, 8, 1), 0.3, 0)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(junk, (8, 8, 1), 0.3, 0)
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "missing.npz", (8, 8, 1), 0.3, 0)


def test_npz_single_class(tmp_path: Path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 8, 8, 1)), y=np.zeros(6))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_npz(path, (8, 8, 1), 0.3, 0)


def _image(path: Path, value: int, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def test_image_dir_resizes_and_labels_by_folder(tmp_path: Path):
    for i in range(4):
        _image(tmp_path / "cats" / f"{i}.png", 10)
        _image(tmp_path / "dogs" / f"{i}.png", 250)
    data = load_image_dir(tmp_path, (8, 8, 1), 0.25, 0)
    assert data.class_names == ("cats", "dogs")
    assert data.x_train.shape[1:] == (8, 8, 1)
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert np.allclose(x[y == 1], 250 / 255) and np.allclose(x[y == 0], 10 / 255)


def test_image_dir_with_one_class(tmp_path: Path):
    _image(tmp_path / "only" / "a.png", 1)
    with pytest.raises(DataError, match="found 1 class folder"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)


def test_image_dir_with_broken_image_names_the_file(tmp_path: Path):
    _image(tmp_path / "a" / "ok.png", 1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)


def test_one_image_per_class_is_refused_before_training(tmp_path: Path):
    _image(tmp_path / "a" / "x.png", 1)
    _image(tmp_path / "b" / "x.png", 2)
    with pytest.raises(DataError, match="class 'a' has 1 example.*at least 2 per class"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)


def test_two_row_npz_is_refused_with_a_reason(tmp_path: Path):
    path = tmp_path / "two.npz"
    np.savez(path, x=np.zeros((2, 8, 8)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="two.npz: class '0' has 1 example"):
        load_npz(path, (8, 8, 1), 0.2, 0)


def test_split_that_leaves_no_held_out_example_is_refused(tmp_path: Path):
    path = tmp_path / "small.npz"
    np.savez(path, x=np.zeros((4, 8, 8)), y=np.array([0, 0, 1, 1]))
    with pytest.raises(DataError, match="leave no held-out example"):
        load_npz(path, (8, 8, 1), 0.01, 0)
    data = load_npz(path, (8, 8, 1), 0.5, 0)
    assert len(data.x_test) == 2 and len(data.x_train) == 2


@pytest.mark.parametrize("x, reason", [
    (np.array(["a"] * 640).reshape(10, 8, 8), "numeric samples"),
    (np.full((10, 8, 8), np.nan), "NaN/Inf"),
])
def test_npz_with_unusable_samples(tmp_path: Path, x: np.ndarray, reason: str):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=np.arange(10) % 2)
    with pytest.raises(DataError, match=reason):
        load_npz(path, (8, 8, 1), 0.2, 0)


def test_sixteen_bit_png_keeps_its_range(tmp_path: Path):
    ramp = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000 of 65535
    for name in ("a", "b"):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(ramp).save(tmp_path / name / f"{i}.png")
    data = load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)
    x = np.concatenate([data.x_train, data.x_test])
    assert np.allclose(x[0, ..., 0], ramp / 65535.0, atol=1e-3)  # not clipped to white
    assert (x >= 0.999).mean() == 0


def test_decompression_bomb_is_refused_unread(tmp_path: Path):
    from pipeline.model import data as data_module

    (tmp_path / "a").mkdir()
    Image.new("L", (9000, 9000)).save(tmp_path / "a" / "big.png")  # 81 MP, under Pillow's own limit
    _image(tmp_path / "b" / "x.png", 1)
    assert 9000 * 9000 > data_module.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="big.png: 9000x9000 pixels is over"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)


def test_zero_byte_and_truncated_images_name_the_file(tmp_path: Path):
    """A 0-byte JPEG is refused by the header pass; a truncated PNG when its pixels are decoded."""
    for i in range(3):
        _image(tmp_path / "a" / f"{i}.png", 1)
        _image(tmp_path / "b" / f"{i}.png", 200)
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)
    (tmp_path / "b" / "empty.jpg").unlink()
    whole = (tmp_path / "b" / "0.png").read_bytes()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "b" / "cut.png")
    cut = (tmp_path / "b" / "cut.png").read_bytes()
    (tmp_path / "b" / "cut.png").write_bytes(cut[: len(cut) // 2])
    assert len(whole) > 0
    with pytest.raises(DataError, match=r"cut\.png: not a readable image"):
        load_image_dir(tmp_path, (8, 8, 1), 0.3, 0)


def test_image_dir_split_is_decided_on_the_file_list(tmp_path: Path):
    """Each image's pixels encode its own index: train and held-out hold exactly the files the
    label-only split picked, and two loads agree."""
    from pipeline.model.data import split_indices
    from pipeline.model.image_files import image_folder_index

    for i in range(10):
        _image(tmp_path / ("a" if i < 5 else "b") / f"{i}.png", 20 * i + 5)
    files, labels, names, _ = image_folder_index(tmp_path)
    _, test = split_indices(labels, names, 0.4, 3)
    data = load_image_dir(tmp_path, (8, 8, 1), 0.4, 3)
    expected = sorted(20 * int(files[t].stem) + 5 for t in test)
    assert sorted(np.round(data.x_test[:, 0, 0, 0] * 255).astype(int)) == expected
    assert np.array_equal(load_image_dir(tmp_path, (8, 8, 1), 0.4, 3).x_train, data.x_train)


def test_baseline_cap_keeps_a_stratified_seeded_subset_of_every_class():
    from pipeline.model.train_split import Split, cap_examples

    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    x = np.arange(len(y), dtype=np.float32)[:, None]
    split = Split(x, y, None, None)
    same, capped_from = cap_examples(split, None, 0)
    assert same is split and capped_from is None
    assert cap_examples(split, 100, 0)[1] is None  # at the limit: nothing cut
    small, capped_from = cap_examples(split, 40, 7)
    assert capped_from == 100 and 38 <= len(small.y_fit) <= 42
    assert set(np.unique(small.y_fit)) == {0, 1, 2, 3}  # every class survives the cut
    assert np.array_equal(small.y_fit, y[small.x_fit[:, 0].astype(int)])  # rows stay paired
    assert np.array_equal(cap_examples(split, 40, 7)[0].x_fit, small.x_fit)


def test_decoding_shows_a_bar_with_the_image_rate(tmp_path: Path):
    import io

    from rich.console import Console

    from pipeline.progress import Reporter

    for i in range(6):
        _image(tmp_path / ("a" if i % 2 else "b") / f"{i}.png", 40 * i)
    shown = io.StringIO()
    load_image_dir(tmp_path, (8, 8, 1), 0.3, 0, Reporter(console=Console(file=shown, width=160)))
    text = shown.getvalue()
    assert "decode training images" in text and "decode held-out images" in text
    assert "images/s" in text and "4/4" in text and "2/2" in text


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_read_in_chunks_equals_the_whole_array_split(tmp_path: Path, monkeypatch, save):
    """Chunks of 7 rows (not a divisor of 100) scatter every row to the split the labels chose."""
    from pipeline.model import npz_source

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (100, 8, 8)).astype(np.uint8)
    y = np.repeat(np.array(["cat", "dog", "eel"]), [40, 35, 25])
    save(tmp_path / "d.npz", x=x, y=y)
    monkeypatch.setattr(npz_source, "CHUNK_BYTES", 7 * 64)
    data = load_npz(tmp_path / "d.npz", (8, 8, 1), 0.3, 5)
    expected = split_dataset(x[..., None].astype(np.float32), encode_labels(y)[0], ("cat", "dog", "eel"), 0.3, 5)
    for got, want in zip((data.x_train, data.y_train, data.x_test, data.y_test),
                         (expected.x_train, expected.y_train, expected.x_test, expected.y_test), strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert data.class_names == ("cat", "dog", "eel") and data.x_train.dtype == np.float32


def test_npz_nan_in_a_later_chunk_and_a_truncated_member_are_refused(tmp_path: Path, monkeypatch):
    import zipfile

    from pipeline.model import npz_source

    x = np.zeros((20, 8, 8), np.float32)
    x[17, 3, 3] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.arange(20) % 2)
    monkeypatch.setattr(npz_source, "CHUNK_BYTES", 4 * 256)
    with pytest.raises(DataError, match="NaN/Inf"):
        load_npz(tmp_path / "inf.npz", (8, 8, 1), 0.2, 0)
    header = np.lib.format
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as archive:
        with archive.open("y.npy", "w") as member:
            header.write_array(member, np.arange(20) % 2)
        with archive.open("x.npy", "w") as member:
            header.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (20, 8, 8)})
            member.write(np.zeros((12, 8, 8), np.float32).tobytes())
    with pytest.raises(DataError, match=r"cut\.npz: x ends after 12 of 20 rows"):
        load_npz(tmp_path / "cut.npz", (8, 8, 1), 0.2, 0)


def test_npz_of_objects_is_refused_from_its_header(tmp_path: Path):
    x = np.empty((10, 8, 8), dtype=object)
    x[:] = 1.0
    np.savez(tmp_path / "obj.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DataError, match="not a readable .npz file|numeric samples"):
        load_npz(tmp_path / "obj.npz", (8, 8, 1), 0.2, 0)

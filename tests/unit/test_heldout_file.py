"""heldout.npz: written batch by batch or by np.savez, read back row ranges at a time."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.model.data import image_dir_rows, materialized
from pipeline.model.heldout_file import StoredArray, open_heldout, save_heldout


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for label in range(2):
        for i in range(9):
            (root / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / f"c{label}" / f"{i}.png")
    return root


def test_streamed_and_whole_writes_read_back_alike_and_lazily(tmp_path: Path):
    data = image_dir_rows(_folder(tmp_path / "imgs"), (8, 8, 1), 0.5, 0)
    expected = materialized(data, None, "images").x_test
    save_heldout(tmp_path / "streamed.npz", data.x_test, data.y_test)
    save_heldout(tmp_path / "whole.npz", expected, data.y_test)
    for name in ("streamed.npz", "whole.npz"):
        with np.load(tmp_path / name) as plain:  # still an ordinary .npz
            np.testing.assert_array_equal(plain["x"], expected)
        x, y = open_heldout(tmp_path / name)
        assert isinstance(x, StoredArray) and x.shape == expected.shape and len(x) == len(expected)
        np.testing.assert_array_equal(y, data.y_test)
        np.testing.assert_array_equal(x[2:5], expected[2:5])
        np.testing.assert_array_equal(x[:], expected)
        np.testing.assert_array_equal(x[-1], expected[-1])
        assert x[7:100].shape == (len(expected) - 7, 8, 8, 1)
        with pytest.raises(IndexError):
            x[len(expected)]
    assert not list(tmp_path.glob(".*partial"))


def test_a_compressed_archive_is_loaded_whole(tmp_path: Path):
    x = np.random.default_rng(0).random((6, 4, 4, 1)).astype(np.float32)
    np.savez_compressed(tmp_path / "h.npz", x=x, y=np.arange(6))
    got, y = open_heldout(tmp_path / "h.npz")
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(y, np.arange(6))

from pathlib import Path

import pytest

from pipeline.errors import ExportError, TransferError
from pipeline.model.freeze import LayerInfo, layers_to_unfreeze
from pipeline.storage.versions import choose_version, existing_versions

BASE = [
    LayerInfo("image", False, False),
    LayerInfo("conv1", True, False),
    LayerInfo("conv2", True, False),
    LayerInfo("bn2", True, True),
    LayerInfo("pool", False, False),
    LayerInfo("conv3", True, False),
    LayerInfo("features", True, False),
]


def test_top_n_counts_weighted_layers_and_skips_batchnorm():
    assert layers_to_unfreeze(BASE, top=2, after=None) == ["conv3", "features"]
    assert layers_to_unfreeze(BASE, top=3, after=None) == ["conv2", "conv3", "features"]
    assert layers_to_unfreeze(BASE, top=0, after=None) == []
    assert "bn2" not in layers_to_unfreeze(BASE, top=10, after=None)


def test_after_named_layer_wins_over_top():
    assert layers_to_unfreeze(BASE, top=1, after="conv1") == ["conv2", "conv3", "features"]


def test_after_unknown_layer_names_it():
    with pytest.raises(TransferError, match="'nope'"):
        layers_to_unfreeze(BASE, top=1, after="nope")


def test_versions_ignore_non_integer_dirs(tmp_path: Path):
    for name in ("1", "3", ".staging-4-abc", "tmp", "10"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert existing_versions(tmp_path) == [1, 3, 10]
    assert existing_versions(tmp_path / "missing") == []


def test_choose_next_or_pinned():
    assert choose_version([], None, Path("m")) == 1
    assert choose_version([1, 3], None, Path("m")) == 4
    assert choose_version([1, 3], 2, Path("m")) == 2
    with pytest.raises(ExportError, match="version 3 already exists"):
        choose_version([1, 3], 3, Path("m"))

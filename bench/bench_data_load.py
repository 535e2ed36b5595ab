"""Loading an image folder: the index-first loader against the previous one, side by side.

Generated folders of 5 classes of 160x160 RGB JPEGs (class-dependent random pixels,
quality 85). Each (loader, size) runs in its own process so its peak RSS is its own:
- `previous`: decode every file in turn into a list, `np.stack`, then split (the code
  before issue 20's first increment, kept here for the comparison);
- `index-first`: header pass, split on the file list, each split decoded by tf.data's
  parallel map straight into its own array (`pipeline.model.data.load_image_dir`).
Reports peak RSS, the RSS per image above the process baseline, and images/s.
Also an .npz of 20,000 uint8 64x64x3 rows: the whole-array loader against the chunked one.
This is the loader alone (issue 20's first step), not the whole transfer stage.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import parse_out, write_results  # noqa: E402

SIZES = (1000, 4000)
SHAPE = (160, 160, 3)
CLASSES = 5


def make_folder(root: Path, count: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % CLASSES
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(SHAPE, np.float32)
        base[..., label % 3] = 60 + 30 * label
        noisy = np.clip(base + rng.normal(0, 40, SHAPE), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i}.jpg", quality=85)
    return root


def previous_loader(path: Path) -> tuple[int, int]:
    """The loader as it was: a list of arrays, a stack, a split copy."""
    from PIL import Image

    from pipeline.model.data import image_to_array, split_dataset

    images, labels = [], []
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    for label, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.iterdir()):
            with Image.open(file) as opened:
                images.append(image_to_array(opened, (SHAPE[1], SHAPE[0]), SHAPE[2]))
            labels.append(label)
    data = split_dataset(np.stack(images), np.array(labels), tuple(d.name for d in class_dirs), 0.3, 0)
    return len(data.y_train), len(data.y_test)


def index_first_loader(path: Path) -> tuple[int, int]:
    from pipeline.model.data import load_image_dir

    data = load_image_dir(path, SHAPE, 0.3, 0)
    return len(data.y_train), len(data.y_test)


NPZ_ROWS, NPZ_SHAPE = 20_000, (64, 64, 3)


def previous_npz(path: Path) -> tuple[int, int]:
    """The .npz loader as it was: the whole `x`, a float32 copy, then split copies."""
    from pipeline.model.data import encode_labels, fit_to_input, require_numeric, split_dataset

    with np.load(path, allow_pickle=False) as archive:
        x, y_raw = archive["x"], archive["y"]
    require_numeric(x, str(path))
    y, names = encode_labels(y_raw)
    data = split_dataset(fit_to_input(x, NPZ_SHAPE, str(path)), y, names, 0.3, 0)
    return len(data.y_train), len(data.y_test)


def chunked_npz(path: Path) -> tuple[int, int]:
    from pipeline.model.npz_source import load_npz

    data = load_npz(path, NPZ_SHAPE, 0.3, 0)
    return len(data.y_train), len(data.y_test)


LOADERS = {"previous": previous_loader, "index-first": index_first_loader,
           "npz-previous": previous_npz, "npz-chunked": chunked_npz}


def child(loader: str, path: Path) -> None:
    import tensorflow  # noqa: F401 - both loaders measured with TF imported (the stage has it)

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    train, test = LOADERS[loader](path)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_rss_mb": baseline / 1024, "peak_rss_mb": peak / 1024, "wall_s": wall,
                      "images": train + test}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]))
        return
    out = parse_out(__doc__.splitlines()[0])
    pixel_mb = np.prod(SHAPE) * 4 / 2**20
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            folder = make_folder(Path(tmp) / str(size), size)
            for loader in ("previous", "index-first"):
                proc = subprocess.run([sys.executable, __file__, "--child", loader, str(folder)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                grown = row["peak_rss_mb"] - row["baseline_rss_mb"]
                row.update(loader=loader, size=size, rss_mb_per_image=grown / size,
                           x_float32_pixels=grown / size / pixel_mb, images_per_s=size / row["wall_s"])
                runs.append(row)
                print(json.dumps(row), flush=True)
    ratios = {}
    for size in SIZES:
        old, new = (next(r for r in runs if r["size"] == size and r["loader"] == name)
                    for name in ("previous", "index-first"))
        ratios[str(size)] = {"peak_rss_new_over_old": new["peak_rss_mb"] / old["peak_rss_mb"],
                             "per_image_rss_new_over_old": new["rss_mb_per_image"] / old["rss_mb_per_image"],
                             "speed_new_over_old": new["images_per_s"] / old["images_per_s"]}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        rng = np.random.default_rng(0)
        np.savez(npz, x=rng.integers(0, 255, (NPZ_ROWS, *NPZ_SHAPE), dtype=np.uint8),
                 y=np.arange(NPZ_ROWS) % CLASSES)
        npz_runs = {}
        for loader in ("npz-previous", "npz-chunked"):
            proc = subprocess.run([sys.executable, __file__, "--child", loader, str(npz)],
                                  capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            grown = row["peak_rss_mb"] - row["baseline_rss_mb"]
            row.update(x_float32_bytes=grown / (NPZ_ROWS * np.prod(NPZ_SHAPE) * 4 / 2**20))
            npz_runs[loader] = row
            print(loader, json.dumps(row), flush=True)
    npz_ratio = npz_runs["npz-chunked"]["peak_rss_mb"] / npz_runs["npz-previous"]["peak_rss_mb"]
    write_results(out, "data_load", {"shape": list(SHAPE), "float32_mb_per_image": pixel_mb,
                                     "runs": runs, "ratios": ratios,
                                     "npz": {"rows": NPZ_ROWS, "shape": list(NPZ_SHAPE), "dtype": "uint8",
                                             "runs": npz_runs, "peak_rss_chunked_over_previous": npz_ratio}})


if __name__ == "__main__":
    main()

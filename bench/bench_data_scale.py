"""The transfer stage at the sizes people bring: memory, time and the feature pass.

Generated folders of 5 classes of 224x224 RGB JPEGs (a class colour under a smooth
random texture, quality 85) of 1,000, 10,000 and 40,000 images. Each run is its own
process, so its peak RSS is its own:
1. `stream` — the stage's code path: the folder as lazy rows, frozen-base passes
   through the on-disk feature cache, held-out set written batch by batch;
   `arrays` — the same transfer on the folder decoded into arrays first (the stage's
   behaviour before this change), where it fits in memory (1k, 10k).
   A small CNN source (strided convs, global pool), fine-tune strategy, no baseline.
   MobileNetV2 (random init) streamed at 1,000 images too.
2. The frozen-base feature pass, images/s, on 2,000 images, each way in a fresh process
   after a traced warm-up, 3 times interleaved (medians compared): `model.predict` on pixels already decoded in memory (decode
   not timed) vs the cache's streamed pass (decode, model, write) vs
   `keras.utils.image_dataset_from_directory` + `model.predict` — small CNN and MobileNetV2.
3. `tfrollout deploy --until transfer --no-baseline` twice on the 10,000-image folder,
   small CNN and MobileNetV2 fine-tuned, MobileNetV2 feature extraction: the second run
   reads the cache; transfer-stage time ratio and both accuracies.
Sizes can be cut with BENCH_DATA_SCALE_SIZES=1000,10000 (the default runs all three).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import parse_out, write_results  # noqa: E402

SHAPE = (224, 224, 3)
CLASSES = 5
SIZES = tuple(int(s) for s in os.environ.get("BENCH_DATA_SCALE_SIZES", "1000,10000,40000").split(",") if s)
PASS_IMAGES = 2000
TFROLLOUT = str(Path(sys.executable).with_name("tfrollout"))
TRANSFER = {"head_epochs": 10, "fine_tune_epochs": 3, "patience": 50, "baseline": False}


def make_folder(root: Path, count: int, offset: int = 0) -> Path:
    """`count` JPEGs, class i % 5: a class colour plus one of 32 smooth textures, shifted."""
    from PIL import Image

    rng = np.random.default_rng(offset)
    textures = []
    for _ in range(32):
        coarse = rng.normal(0, 40, (28, 28, 3)).astype(np.float32)
        textures.append(np.kron(coarse, np.ones((8, 8, 1), np.float32)))
    colours = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [60, 200, 200]], np.float32)
    for i in range(count):
        label = (i + offset) % CLASSES
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        texture = np.roll(textures[int(rng.integers(32))], int(rng.integers(224)), axis=int(rng.integers(2)))
        pixels = np.clip(colours[label] * 0.5 + 64 + texture, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i + offset}.jpg", quality=85)
    return root


def small_cnn(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE, name="inputs")
    x = keras.layers.Conv2D(16, 5, strides=4, activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="mid")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="top")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    keras.Model(inputs, outputs).save(path)
    return path


def mobilenet(path: Path) -> Path:
    import keras

    from pipeline.model.training import recalibrate_batchnorm

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(input_shape=SHAPE, weights=None, classes=CLASSES)
    # Fresh BatchNorm statistics (0 / 1) make every image's pooled features the same (the
    # transfer stage's source check refuses such a model): estimate them on 128 images first.
    recalibrate_batchnorm(net, np.random.default_rng(0).uniform(0, 1, (128, *SHAPE)).astype(np.float32))
    net.save(path)
    return path


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM): unlike ru_maxrss, not inherited across exec
    from a parent that had grown (the parent builds the models)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_transfer(mode: str, model_path: Path, folder: Path, cache_dir: Path) -> dict:
    """One transfer run as the stage does it (`stream`) or on decoded arrays (`arrays`)."""
    import keras

    from pipeline.config import TransferConfig
    from pipeline.model.data import image_dir_rows, materialized
    from pipeline.model.feature_cache import FeatureCache
    from pipeline.model.heldout_file import save_heldout
    from pipeline.model.source import classifier_input_layer
    from pipeline.model.training import transfer
    from pipeline.progress import Reporter

    quiet = Reporter(quiet=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = keras.models.load_model(model_path)
    cut = classifier_input_layer(model)
    start_rss = peak_rss_mb()
    t0 = time.perf_counter()
    data = image_dir_rows(folder, SHAPE, 0.3, 0)
    if mode == "arrays":
        data = materialized(data, None, "images")
    cfg = TransferConfig(**TRANSFER)
    cache = FeatureCache(cache_dir) if mode == "stream" else None
    outcome = transfer(model, cut, data, cfg, quiet, cache)
    save_heldout(cache_dir / "heldout.npz", data.x_test, data.y_test)
    wall = time.perf_counter() - t0
    return {"mode": mode, "images": len(data.y_train) + len(data.y_test), "wall_s": wall,
            "start_rss_mb": start_rss, "peak_rss_mb": peak_rss_mb(), "test_accuracy": outcome.test_accuracy,
            "phases": {k: {"epochs": p.epochs_run, "wall_s": p.wall_s, "setup_s": p.setup_s}
                       for k, p in outcome.phases.items()},
            "cache": None if cache is None else cache.stats.to_json()}


def child_pass(how: str, model_path: Path, folder: Path, cache_dir: Path) -> dict:
    """The frozen-base pass one way (`memory`, `stream` or `keras`), in a fresh process,
    after a warm-up that traces the model (a 64-image pass the same way)."""
    import keras
    import tensorflow as tf

    from pipeline.model.data import image_dir_rows
    from pipeline.model.feature_cache import FeatureCache
    from pipeline.model.image_set import ImageSet
    from pipeline.model.source import classifier_input_layer
    from pipeline.model.training import split_base

    model = keras.models.load_model(model_path)
    base = split_base(model, classifier_input_layer(model))
    rows = image_dir_rows(folder, SHAPE, 0.5, 0).x_train
    everything = ImageSet(rows.items, rows.origins, np.arange(len(rows.items)), SHAPE, kinds=rows.kinds)
    count = len(everything)
    result: dict = {"how": how, "images": count}
    if how == "memory":  # decoding is not timed: the model alone on pixels already in memory
        decoded = everything.materialize()
        base.predict(decoded[:64], batch_size=64, verbose=0)
        t0 = time.perf_counter()
        base.predict(decoded, batch_size=64, verbose=0)
    elif how == "memory-forward":  # the same, through the traced function the cache's pass calls
        from pipeline.model.feature_cache import inference_function

        decoded = everything.materialize()
        forward = inference_function(base)
        forward(decoded[:64])
        t0 = time.perf_counter()
        for start in range(0, count, 64):
            np.asarray(forward(decoded[start:start + 64]))
    elif how == "stream":
        cache = FeatureCache(cache_dir)
        cache.features(base, everything[:64], "warm-up")
        cache.stats = type(cache.stats)()
        t0 = time.perf_counter()
        cache.features(base, everything, "pass")
        result.update(decode_wait_s=cache.stats.decode_s, model_s=cache.stats.model_s, sync_s=cache.stats.sync_s)
    else:
        base.predict(np.zeros((64, *SHAPE), np.float32), verbose=0)
        t0 = time.perf_counter()
        dataset = keras.utils.image_dataset_from_directory(folder, image_size=SHAPE[:2], batch_size=64,
                                                           shuffle=False, labels=None, verbose=False)
        base.predict(dataset.map(lambda x: x / 255.0).prefetch(tf.data.AUTOTUNE), verbose=0)
    result["images_per_s"] = count / (time.perf_counter() - t0)
    return result


# This 2-core machine's throughput is bimodal between identical runs (≈1,500 or ≈2,100 images/s
# for the small CNN, whatever the tf.data threading): medians over 5 interleaved runs, and the
# best of each (what a way can do when nothing interferes).
PASS_REPEATS = 5


def feature_pass(model_path: Path, folder: Path, cache_dir: Path) -> dict:
    """Each way PASS_REPEATS times, interleaved; ratios of the medians."""
    import statistics

    hows = ("memory", "memory-forward", "stream", "keras")
    runs: dict[str, list[float]] = {how: [] for how in hows}
    for repeat in range(PASS_REPEATS):
        for how in hows:
            row = run_child("pass", how, str(model_path), str(folder), str(cache_dir / f"{how}{repeat}"))
            runs[how].append(row["images_per_s"])
            shutil.rmtree(cache_dir / f"{how}{repeat}", ignore_errors=True)
    median = {how: statistics.median(values) for how, values in runs.items()}
    best = {how: max(values) for how, values in runs.items()}
    return {"images_per_s": runs, "median": median, "best": best,
            "best_stream_over_best_image_dataset_from_directory": best["stream"] / best["keras"],
            "best_stream_over_best_in_memory_forward": best["stream"] / best["memory-forward"],
            "stream_over_in_memory_predict": median["stream"] / median["memory"],
            "stream_over_in_memory_forward": median["stream"] / median["memory-forward"],
            "stream_over_image_dataset_from_directory": median["stream"] / median["keras"]}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deploy_twice(model_path: Path, folder: Path, work: Path, strategy: str = "fine-tune") -> dict:
    """The acceptance measurement: the CLI's transfer stage, first run vs re-run."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "deploy.toml").write_text(
        f'[model]\npath = "{model_path}"\n[data]\nsource = "dir"\npath = "{folder}"\n'
        f'[transfer]\nstrategy = "{strategy}"\nhead_epochs = {TRANSFER["head_epochs"]}\n'
        f'fine_tune_epochs = {TRANSFER["fine_tune_epochs"]}\npatience = {TRANSFER["patience"]}\n')
    runs = []
    for _ in range(2):
        proc = subprocess.run([TFROLLOUT, "deploy", "--json", "--until", "transfer", "--no-baseline"],
                              cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        stage = json.loads(proc.stdout)["stages"]["transfer"]
        report = json.loads(Path(stage["outputs"]["report"]).read_text())
        runs.append({"transfer_stage_s": stage["duration_s"], "test_accuracy": report["transfer"]["test_accuracy"],
                     "phases": report["transfer"]["phases"], "cache": report["feature_cache"]})
    shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "speedup": runs[0]["transfer_stage_s"] / runs[1]["transfer_stage_s"],
            "same_accuracy": runs[0]["test_accuracy"] == runs[1]["test_accuracy"]}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "pass":
            result = child_pass(rest[0], Path(rest[1]), Path(rest[2]), Path(rest[3]))
        else:
            result = child_transfer(kind, Path(rest[0]), Path(rest[1]), Path(rest[2]))
        print(json.dumps(result))
        return
    out = parse_out(__doc__.splitlines()[0])
    pixel_mb = float(np.prod(SHAPE) * 4 / 2**20)
    results: dict = {"shape": list(SHAPE), "float32_mb_per_image": pixel_mb, "transfer": TRANSFER,
                     "scale": [], "feature_pass": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        cnn, mnet = small_cnn(root / "cnn.keras"), mobilenet(root / "mobilenet.keras")
        for size in SIZES:
            t0 = time.perf_counter()
            folder = make_folder(root / f"imgs{size}", size)
            print(f"generated {size} images in {time.perf_counter() - t0:.0f} s "
                  f"({shutil.disk_usage(root).used / 2**30:.1f} GiB used on the disk)", flush=True)
            # decoded into arrays, the stage grew by ≈2.5 MB per 224x224 image (4.4x the float32
            # pixels: the decoded split plus Keras' copies): only the 1,000-image run fits safely
            modes = ["stream", "arrays"] if size * 2.6 < 6000 else ["stream"]
            for mode in modes:
                row = run_child(mode, str(cnn), str(folder), str(root / f"cache-{mode}-{size}"))
                row.update(size=size, model="small_cnn", rss_mb_per_image=(row["peak_rss_mb"] - row["start_rss_mb"]) / size,
                           images_per_s=size / row["wall_s"])
                results["scale"].append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(root / f"cache-{mode}-{size}", ignore_errors=True)
            if size == 1000:
                row = run_child("stream", str(mnet), str(folder), str(root / "cache-mnet"))
                row.update(size=size, model="mobilenet_v2", images_per_s=size / row["wall_s"])
                results["scale"].append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(root / "cache-mnet", ignore_errors=True)
            if size == 10000:
                results["rerun_10000"] = {
                    f"{name} {strategy}": deploy_twice(model, folder, root / f"rerun-{name}-{strategy}", strategy)
                    for name, model, strategy in (("small_cnn", cnn, "fine-tune"), ("mobilenet_v2", mnet, "fine-tune"),
                                                  ("mobilenet_v2", mnet, "feature-extraction"))}
                print(json.dumps(results["rerun_10000"]), flush=True)
            if size != SIZES[-1]:
                shutil.rmtree(folder)
        pass_folder = make_folder(root / "pass", PASS_IMAGES, offset=7)
        for name, model in (("small_cnn", cnn), ("mobilenet_v2", mnet)):
            results["feature_pass"][name] = feature_pass(model, pass_folder, root / f"pc-{name}")
            print(name, json.dumps(results["feature_pass"][name]), flush=True)
    stream = {r["size"]: r for r in results["scale"] if r["mode"] == "stream" and r["model"] == "small_cnn"}
    if stream:
        smallest, largest = stream[min(stream)], stream[max(stream)]
        results["ratios"] = {
            "peak_rss_largest_over_smallest": largest["peak_rss_mb"] / smallest["peak_rss_mb"],
            "wall_per_image_largest_over_smallest": (largest["wall_s"] / largest["size"])
            / (smallest["wall_s"] / smallest["size"]),
            "sizes": [min(stream), max(stream)]}
    write_results(out, "data_scale", results)


if __name__ == "__main__":
    main()

"""Pictures of a transfer run: held-out accuracy against epochs and wall time, and the confusion matrix.

matplotlib runs headless (Agg) and is imported only here, when a picture is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():  # noqa: ANN202 - matplotlib's module type
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, Sequence[Sequence[float]]], path: Path, title: str) -> Path:
    """One line per arm (`{"transfer": [[epoch, wall_s, acc], ...], ...}`), against epochs and seconds."""
    plt = _pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, points in curves.items():
        if not points:
            continue
        epochs, wall, acc = zip(*((p[0], p[1], p[2]) for p in points), strict=True)
        by_epoch.plot(epochs, acc, label=name)
        by_time.plot(wall, acc, label=name)
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("wall time (s)")
    by_epoch.set_ylabel("held-out accuracy")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> Path:
    """The confusion matrix as a heat map with the counts written in (rows: true, columns: predicted)."""
    plt = _pyplot()
    size = max(3.0, 0.6 * len(classes) + 2)
    fig, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    ticks = range(len(classes))
    axis.set_xticks(list(ticks), labels=list(classes))
    axis.set_yticks(list(ticks), labels=list(classes))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in confusion), default=0)
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            axis.text(j, i, str(count), ha="center", va="center",
                      color="white" if peak and count > peak / 2 else "black")
    axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Which base layers to unfreeze for fine-tuning (pure: no TensorFlow needed).

BatchNormalization layers are never unfrozen: with few target examples their
batch statistics are noise, so they stay in inference mode with source statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import TransferError


@dataclass(frozen=True)
class LayerInfo:
    name: str
    has_weights: bool
    is_batch_norm: bool


def layers_to_unfreeze(layers: list[LayerInfo], *, top: int, after: str | None) -> list[str]:
    """Names of the base layers to train in the fine-tune phase, in model order.

    `after` (a layer name) wins over `top`: every weighted layer after it is unfrozen.
    Otherwise the last `top` weighted, non-BatchNorm layers are.
    """
    candidates = [layer for layer in layers if layer.has_weights and not layer.is_batch_norm]
    if after is not None:
        names = [layer.name for layer in layers]
        if after not in names:
            raise TransferError(f"transfer.unfreeze_after: no layer named {after!r} in the base "
                                f"(base layers: {', '.join(names)})")
        position = names.index(after)
        return [layer.name for layer in candidates if names.index(layer.name) > position]
    if top == 0:
        return []
    return [layer.name for layer in candidates[-top:]]


def variables_to_train(names: list[str], may_train: list[bool], patterns: list[str] | None,
                       where: str) -> list[int]:
    """Positions of a SavedModel base's variables to fine-tune, in signature order.

    A SavedModel has no layers to count from the top, and its variable order is not
    the order of its layers (a `tf.Module` lists attributes alphabetically), so the
    user names them: `patterns` are regular expressions searched in each name. Unset:
    every variable the SavedModel lets be trained (TF Hub's `trainable=True`). A
    pattern that matches no trainable variable is an error, not a silent no-op.
    """
    import re

    allowed = [i for i, ok in enumerate(may_train) if ok]
    if patterns is None:
        return allowed
    chosen: set[int] = set()
    for pattern in patterns:
        hits = {i for i in allowed if re.search(pattern, names[i])}
        if not hits:
            shown = ", ".join(names[i] for i in allowed[:8]) + (", ..." if len(allowed) > 8 else "")
            raise TransferError(f"transfer.unfreeze_variables: {pattern!r} matches none of {where}'s "
                                f"{len(allowed)} trainable variables ({shown or 'none'})")
        chosen |= hits
    return sorted(chosen)

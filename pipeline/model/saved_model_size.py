"""Drop the saver's *save* function from a SavedModel written for serving.

`tf.saved_model.save` writes two traced functions for its SaverDef: `_traced_save`
(writes a checkpoint) and `_traced_restore`. Loaders only ever restore: TF Serving's
C++ LoadSavedModel and `tf.compat.v1.saved_model.loader.load` run
`saver_def.restore_op_name`, fed through `saver_def.filename_tensor_name`, and
`tf.saved_model.load` reads the checkpoint through the object graph. The save function
and what only it reads are ≈31 % of `saved_model.pb` (16 of 51 KB for the demo model,
0.28 of 0.88 MB for MobileNetV2), enough to push a small model's directory past
1.1 × its raw weight bytes (bench/bench_saved_model_size.py).

The edit is small and checked: the one graph node that calls the save function is
removed with the function and the constant only it read (the object-graph proto it
writes into a checkpoint; restore does not read it), and `saver_def.save_tensor_name`
then names the filename placeholder, the tensor the save function returned (the prefix,
passed through), so every name in the SaverDef still resolves. The restore path is untouched. What changes:
a TF1 `Saver.save` on this graph writes no variables (nothing in serving calls it).
Anything unexpected in the graph leaves the file as it was (the size test notices).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tensorflow.core.protobuf import saved_model_pb2, saver_pb2
from tensorflow.python.saved_model import fingerprinting_utils

CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})


def _node_of(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":")[0]


def _save_call(meta_graph: Any) -> tuple[Any, Any] | None:
    """(graph node, FunctionDef) of the save function, or None when the graph is not as
    `tf.saved_model.save` writes it (then nothing is removed)."""
    saver = meta_graph.saver_def
    if saver.version != saver_pb2.SaverDef.V2 or not saver.save_tensor_name.endswith(":0"):
        return None
    graph = meta_graph.graph_def
    name = _node_of(saver.save_tensor_name)
    calls = [n for n in graph.node if n.name == name]
    if len(calls) != 1 or calls[0].op not in CALL_OPS or name == _node_of(saver.restore_op_name):
        return None
    call = calls[0]
    if not call.input or call.input[0] != _node_of(saver.filename_tensor_name):
        return None
    if any(_node_of(i) == name for n in graph.node for i in n.input):
        return None  # something else depends on the save call
    fns = [f for f in graph.library.function if f.signature.name == call.attr["f"].func.name]
    return (call, fns[0]) if len(fns) == 1 else None


def _orphaned_constants(meta_graph: Any, names: set[str]) -> list[Any]:
    """Const nodes among `names` that nothing reads any more (the object-graph proto the
    save function wrote into each checkpoint), unless a signature or the object graph names them."""
    graph = meta_graph.graph_def
    used = {_node_of(i) for n in graph.node for i in n.input}
    used |= {_node_of(t.name) for sig in meta_graph.signature_def.values()
             for t in (*sig.inputs.values(), *sig.outputs.values())}
    used |= {o.constant.operation for o in meta_graph.object_graph_def.nodes if o.HasField("constant")}
    return [n for n in graph.node if n.name in names and n.op == "Const" and n.name not in used]


def drop_save_function(path: Path) -> int:
    """Remove the save function from `path`/saved_model.pb; bytes saved (0: left as it was).

    The file is replaced atomically and fingerprint.pb rewritten by TF from the new one."""
    pb = path / "saved_model.pb"
    before = pb.read_bytes()
    saved = saved_model_pb2.SavedModel.FromString(before)
    if len(saved.meta_graphs) != 1:
        return 0
    meta_graph = saved.meta_graphs[0]
    found = _save_call(meta_graph)
    if found is None:
        return 0
    call, fn = found
    fn_name, inputs = fn.signature.name, {_node_of(i) for i in call.input}
    graph = meta_graph.graph_def
    graph.node.remove(call)
    graph.library.function.remove(fn)
    for const in _orphaned_constants(meta_graph, inputs):
        graph.node.remove(const)
    meta_graph.saver_def.save_tensor_name = meta_graph.saver_def.filename_tensor_name
    after = saved.SerializeToString()
    if fn_name.encode() in after:  # referenced elsewhere (gradient, object graph): keep it
        return 0
    tmp = pb.with_name(f".{pb.name}.tmp{os.getpid()}")
    tmp.write_bytes(after)
    os.replace(tmp, pb)
    if (path / "fingerprint.pb").exists():
        fingerprinting_utils.write_fingerprint(str(path))
    return len(before) - len(after)

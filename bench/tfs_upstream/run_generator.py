"""Run a fetched generator script UNCHANGED under the pip TF wheel.

The newest saved_model_half_plus_two.py imports
`tensorflow.lite.tools.signature.signature_def_utils`, a Bazel-only pybind module
that the pip `tensorflow` wheel does not ship. This runner registers a stand-in
module (same contract as TF's C++ SetSignatureDefMap: a metadata entry
"signature_defs_metadata" whose buffer is a FlexBuffer map key -> serialized
SignatureDef string; an existing entry is overwritten) and then runs the script
as __main__ via runpy. Usage: run_generator.py SCRIPT [script args...]
"""
import runpy
import sys
import types


def set_signature_defs(tflite_model, signature_def_map):
  from flatbuffers import flexbuffers
  from tensorflow.lite.python import schema_py_generated as schema_fb
  from tensorflow.lite.tools import flatbuffer_utils
  if not signature_def_map:
    raise ValueError('signature_def_map should not be empty')
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_model))
  fbb = flexbuffers.Builder()
  with fbb.Map():
    for k in sorted(signature_def_map):
      fbb.Key(k)
      # C++ flexbuffers::Builder::String(key, std::string) stores raw bytes with
      # type STRING; the Python Builder.String() only accepts str, so write the
      # same STRING blob directly.
      fbb._WriteBlob(signature_def_map[k].SerializeToString(), append_zero=True,
                     type_=flexbuffers.Type.STRING)
  data = bytes(fbb.Finish())
  buf = schema_fb.BufferT()
  buf.data = list(data)
  if model.metadata is None:
    model.metadata = []
  existing = [m for m in model.metadata if m.name in (b'signature_defs_metadata', 'signature_defs_metadata')]
  if existing:
    model.buffers[existing[0].buffer] = buf
  else:
    model.buffers.append(buf)
    md = schema_fb.MetadataT()
    md.name = 'signature_defs_metadata'
    md.buffer = len(model.buffers) - 1
    model.metadata.append(md)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


pkg = types.ModuleType('tensorflow.lite.tools.signature')
pkg.__path__ = []
mod = types.ModuleType('tensorflow.lite.tools.signature.signature_def_utils')
mod.set_signature_defs = set_signature_defs
pkg.signature_def_utils = mod
sys.modules[pkg.__name__] = pkg
sys.modules[mod.__name__] = mod

script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name='__main__')

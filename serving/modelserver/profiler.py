"""`tensorflow.ProfilerService` on the model server's gRPC port, registered as
tensorflow_model_server registers it (server.cc, `--enable_profiler`, default true).

Profile runs TensorFlow's in-process profiler (`tf.profiler.experimental`) for the
request's `opts.duration_ms` (ending early on Terminate or a cancelled call), then saves
the XSpace as `<repository_root>/<session_id>/<host_name>.xplane.pb` and answers
`empty_trace` as tsl's ProfilerServiceImpl / CollectDataToRepository do; Monitor is
UNIMPLEMENTED ("unimplemented."), as there. The wheel ships no Python messages for
profiler_service.proto, so the few messages used are declared here by field number
(`opts` is kept as raw bytes and parsed as the wheel's ProfileOptions)."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

log = logging.getLogger("modelserver.profiler")

SERVICE = "tensorflow.ProfilerService"
_F = descriptor_pb2.FieldDescriptorProto


def _message_classes() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(name="tfrollout/profiler_service.proto", package="tensorflow",
                                             syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int]) -> None:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if ftype == _F.TYPE_MESSAGE:
                f.type_name = ".tensorflow.ProfileToolData"

    one, many = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("ProfileRequest", ("duration_ms", 1, _F.TYPE_UINT64, one), ("max_events", 2, _F.TYPE_UINT64, one),
            ("tools", 3, _F.TYPE_STRING, many), ("opts", 4, _F.TYPE_BYTES, one),
            ("repository_root", 5, _F.TYPE_STRING, one), ("session_id", 6, _F.TYPE_STRING, one),
            ("host_name", 7, _F.TYPE_STRING, one))
    message("ProfileToolData", ("name", 1, _F.TYPE_STRING, one), ("data", 2, _F.TYPE_BYTES, one))
    message("ProfileResponse", ("tool_data", 6, _F.TYPE_MESSAGE, many), ("empty_trace", 7, _F.TYPE_BOOL, one))
    message("TerminateRequest", ("session_id", 1, _F.TYPE_STRING, one))
    message("TerminateResponse")
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with TensorFlow's own
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{m.name}"))
            for m in fdp.message_type}


MESSAGES = _message_classes()
ProfileRequest = MESSAGES["ProfileRequest"]
ProfileResponse = MESSAGES["ProfileResponse"]
TerminateRequest = MESSAGES["TerminateRequest"]
TerminateResponse = MESSAGES["TerminateResponse"]


def _is_empty(space) -> bool:
    """No plane holds any event."""
    return not any(line.events for plane in space.planes for line in plane.lines)


class ProfilerService:
    """Profile / Terminate / Monitor; one profiling session at a time (TensorFlow's own
    profiler allows no more)."""

    def __init__(self) -> None:
        self._busy = threading.Lock()
        self._stops: set[str] = set()
        self._stops_lock = threading.Lock()

    def _stopped(self, session_id: str) -> bool:
        with self._stops_lock:
            if session_id in self._stops:
                self._stops.discard(session_id)
                return True
            return False

    def Profile(self, request, context):  # noqa: N802
        import tensorflow as tf
        from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

        opts = profiler_options_pb2.ProfileOptions.FromString(request.opts)
        if not self._busy.acquire(blocking=False):
            context.abort(grpc.StatusCode.INTERNAL, "Another profiling session active.")
        scratch = tempfile.mkdtemp(prefix="tfs-profile-")
        try:
            options = tf.profiler.experimental.ProfilerOptions(
                host_tracer_level=opts.host_tracer_level or 2, python_tracer_level=opts.python_tracer_level,
                device_tracer_level=opts.device_tracer_level or 1)
            try:
                tf.profiler.experimental.start(scratch, options=options)
            except Exception as exc:  # e.g. a profiler started elsewhere in the process
                context.abort(grpc.StatusCode.INTERNAL, str(exc))
            deadline = time.monotonic() + opts.duration_ms / 1000
            cancelled = False
            while time.monotonic() < deadline:
                time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))
                if not context.is_active():
                    cancelled = True
                    break
                if self._stopped(request.session_id):
                    break
            tf.profiler.experimental.stop()
            if cancelled:
                context.abort(grpc.StatusCode.CANCELLED, "Cancelled")
            files = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "*.xplane.pb"))
            data = open(files[0], "rb").read() if files else b""
            response = ProfileResponse(empty_trace=_is_empty(xplane_pb2.XSpace.FromString(data)))
            target = os.path.join(request.repository_root, request.session_id)
            os.makedirs(target, exist_ok=True)
            with open(os.path.join(target, f"{request.host_name}.xplane.pb"), "wb") as f:
                f.write(data)
            log.info("Profiled %d ms into %s", opts.duration_ms, target)
            return response
        except OSError as exc:
            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self._busy.release()

    def Terminate(self, request, context):  # noqa: N802
        with self._stops_lock:
            self._stops.add(request.session_id)
        return TerminateResponse()

    def Monitor(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")

    def add_to_server(self, server: grpc.Server) -> None:
        def unary(fn, req_cls, resp_cls):
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req_cls.FromString,
                                                       response_serializer=resp_cls.SerializeToString)
        handlers = {
            "Profile": unary(self.Profile, ProfileRequest, ProfileResponse),
            "Terminate": unary(self.Terminate, TerminateRequest, TerminateResponse),
            "Monitor": grpc.unary_unary_rpc_method_handler(self.Monitor, request_deserializer=lambda b: b,
                                                           response_serializer=lambda b: b),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

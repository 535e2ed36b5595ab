"""TF Serving's ModelService over gRPC (official stubs): reload the config, read version states."""

from __future__ import annotations

from typing import Any

import grpc

from pipeline.errors import RolloutError


class ModelServiceAPI:
    """One channel to the runtime's gRPC port; `close()` when done."""

    def __init__(self, endpoint: str) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc

        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(endpoint, options=[("grpc.enable_retries", 0)])
        self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def reload(self, config: Any, timeout_s: float) -> None:
        """HandleReloadConfigRequest: blocks until new versions loaded (or failed); raises RolloutError."""
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        try:
            response = self._stub.HandleReloadConfigRequest(request, timeout=timeout_s)
        except grpc.RpcError as err:
            raise RolloutError(f"config reload on {self.endpoint} failed: "
                               f"{err.code().name}: {err.details()}") from None
        if response.status.error_code:
            raise RolloutError(f"config reload on {self.endpoint} failed: {response.status.error_message}")

    def states(self, model: str, timeout_s: float) -> dict[int, tuple[str, str]]:
        """{version: (state name, error message)}; {} when the model is unknown to the server."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            response = self._stub.GetModelStatus(request, timeout=timeout_s)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return {s.version: (names(s.state), s.status.error_message) for s in response.model_version_status}

    def ready(self, timeout_s: float) -> bool:
        """True once the gRPC port answers."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            return True
        except grpc.FutureTimeoutError:
            return False

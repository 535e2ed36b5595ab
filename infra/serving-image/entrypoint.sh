#!/bin/sh
# Same contract as tensorflow/serving's entrypoint: fixed ports, model from env,
# extra arguments appended. exec so SIGTERM reaches the server (graceful stop).
# TFR_SERVING_HOST (default 127.0.0.1: host networking only on these machines)
# is this server's extra --host flag; set 0.0.0.0 for bridge networking.
exec python -m serving.modelserver.main \
  --host="${TFR_SERVING_HOST:-127.0.0.1}" \
  --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" \
  "$@"

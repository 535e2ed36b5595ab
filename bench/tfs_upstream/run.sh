#!/bin/bash
# TF Serving's own tensorflow_model_server_test.py, unchanged, against tfrollout-model-server.
#
# Usage: bench/tfs_upstream/run.sh FETCHED_DIR [--standins] [--keras2] [TEST_NAME ...]
#   FETCHED_DIR  a directory holding copies of tensorflow/serving files under their repo paths
#                (see README.md; they are not committed: fetched files stay out of the repo)
#   --standins   add our stand-ins for the fixtures upstream keeps only as binaries
#   --keras2     run the test under Keras 2 (tf_keras, TF_USE_LEGACY_KERAS=1), the Keras it was
#                written for; the server side is unchanged (it never imports Keras)
# Work files go to $TFS_UPSTREAM_WORK (default /tmp/tfs_upstream). Prints a summary line.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
FETCHED=$(cd "${1:?FETCHED_DIR}" && pwd); shift
STANDINS=0; KERAS2=0
while [ $# -gt 0 ]; do
  case "$1" in --standins) STANDINS=1; shift;; --keras2) KERAS2=1; shift;; *) break;; esac
done
ROOT=${TFS_UPSTREAM_WORK:-/tmp/tfs_upstream}
F=$FETCHED/tensorflow_serving
TS=$ROOT/tf_serving/tensorflow_serving
TD=$TS/servables/tensorflow/testdata
SITE=$($PY -c 'import os,tensorflow_serving as t; print(os.path.dirname(t.__file__))')

# --- 1. Bazel runfiles layout: $TEST_SRCDIR/tf_serving/tensorflow_serving/...
rm -rf "$ROOT/tf_serving" "$ROOT/tmp" "$ROOT/gen" && mkdir -p "$TS/model_servers/test_util" "$TD" "$ROOT/tmp" "$ROOT/gen"
cp "$SITE/__init__.py" "$TS/__init__.py"                 # the installed (empty) package init
ln -s "$SITE/apis" "$TS/apis"                            # generated protos from tensorflow-serving-api
ln -s "$SITE/config" "$TS/config"
: > "$TS/model_servers/__init__.py"; : > "$TS/model_servers/test_util/__init__.py"
cp "$F/model_servers/tensorflow_model_server_test.py" "$TS/model_servers/"
cp "$F/model_servers/test_util/tensorflow_model_server_test_base.py" "$TS/model_servers/test_util/"
printf '#!/bin/sh\nexec %s -m serving.modelserver.main --host 127.0.0.1 "$@"\n' "$PY" > "$TS/model_servers/tensorflow_model_server"
chmod +x "$TS/model_servers/tensorflow_model_server"
for f in good_model_config.txt bad_model_config.txt half_plus_two_model_metadata.json monitoring_config.txt saved_model_half_plus_two.py; do
  cp "$F/servables/tensorflow/testdata/$f" "$TD/"
done

# --- 2. models from TF Serving's own generator (unchanged), run through the signature_def_utils shim
had_original=0; [ -e /tmp/original ] && had_original=1
O=$ROOT/gen/out; mkdir -p "$O"
PYTHONPATH=$REPO $PY "$HERE/run_generator.py" "$TD/saved_model_half_plus_two.py" --device=cpu \
  --output_dir=$O/saved_model_half_plus_two_cpu/00000123 \
  --output_dir_pbtxt=$O/saved_model_half_plus_two_pbtxt/00000123 \
  --output_dir_main_op=$O/saved_model_half_plus_two_main_op/00000123 \
  --output_dir_tflite=$O/saved_model_half_plus_two_tflite/00000123 \
  --output_dir_mlmd=$O/saved_model_half_plus_two_mlmd/00000123 \
  --output_dir_tflite_with_sigdef=$O/saved_model_half_plus_two_tflite_with_sigdef/00000123 \
  > "$ROOT/gen/generator.log" 2>&1 || { echo "generator failed, see $ROOT/gen/generator.log"; exit 1; }
[ $had_original = 0 ] && rm -rf /tmp/original        # the generator hard-codes /tmp/original/export/assets
cp -r "$O/saved_model_half_plus_two_cpu" "$O/saved_model_half_plus_two_tflite" \
      "$O/saved_model_half_plus_two_tflite_with_sigdef" "$TD/"
if [ $STANDINS = 1 ]; then
  $PY "$HERE/make_standins.py" "$TD" > "$ROOT/gen/standins.log" 2>&1 || { echo "stand-ins failed, see $ROOT/gen/standins.log"; exit 1; }
fi

EXTRA=""
if [ $KERAS2 = 1 ]; then
  K=$ROOT/keras2-site
  [ -d "$K/tf_keras" ] || $PY -m pip install -q --no-deps --target "$K" "tf_keras" || { echo "tf_keras install failed"; exit 1; }
  EXTRA=":$K"; export TF_USE_LEGACY_KERAS=1
fi

# --- 3. run the test unchanged (it stops its servers at exit)
rm -f /tmp/tf-serving.sock
cd "$TS/model_servers"
LOG=$ROOT/test.log
TEST_SRCDIR=$ROOT TEST_TMPDIR=$ROOT/tmp PYTHONPATH="$ROOT/tf_serving:$REPO$EXTRA" \
  timeout 3000 $PY tensorflow_model_server_test.py "$@" > "$LOG" 2>&1
rc=$?
sleep 2
left=$(ps -eo pid,args | grep "[s]erving.modelserver.main" | grep -- "--grpc_socket_path=/tmp/tf-serving.sock")
rm -f /tmp/tf-serving.sock                               # UDS path hard-coded in the test
ran=$(grep -c '^\[ RUN      \]' "$LOG"); ok=$(grep -c '^\[       OK \]' "$LOG")
echo "tfs_upstream: $ok of $ran passed (standins=$STANDINS keras2=$KERAS2; the count includes tf.test.TestCase.test_session); log $LOG"
grep '^\[  FAILED  \]' "$LOG"
[ -z "$left" ] || { echo "servers left running:"; echo "$left"; }
exit $rc

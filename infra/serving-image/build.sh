#!/usr/bin/env bash
# Build the offline TF Serving-compatible image with one command, no registry:
#   1. base: debootstrap --variant=minbase bookworm rootfs -> `docker import`
#   2. image: DOCKER_BUILDKIT=0 docker build --network host (python, TF, this server)
# Cached by tag: an existing tag is not rebuilt unless --force (or FORCE=1), or unless
# the server source / Dockerfile changed since it was built (label org.tfrollout.src-hash;
# only the last, cheap layers rebuild then — the python/TF layers stay cached).
#
#   infra/serving-image/build.sh [--force] [--print-tag]
# Env: TF_VERSION (default: the TF version in the project venv, else 2.21.0),
#      IMAGE_REPO (default tfrollout/model-server), BASE_IMAGE, DEBIAN_MIRROR.
# Prints the image tag as the last line of stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FORCE="${FORCE:-0}"
PRINT_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --print-tag) PRINT_ONLY=1 ;;
    *) echo "usage: $0 [--force] [--print-tag]" >&2; exit 2 ;;
  esac
done

if [[ -z "${TF_VERSION:-}" ]]; then
  TF_VERSION="$("$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null || echo 2.21.0)"
fi
IMAGE_REPO="${IMAGE_REPO:-tfrollout/model-server}"
TAG="${IMAGE_REPO}:tf${TF_VERSION}"
BASE_IMAGE="${BASE_IMAGE:-tfrollout/debian-minbase:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ "$PRINT_ONLY" == 1 ]]; then echo "$TAG"; exit 0; fi

log() { echo "[serving-image] $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || { log "no Docker engine reachable (infra/scripts/dockerd.sh start)"; exit 1; }

SRC_HASH="$(cd "$ROOT" && { cat infra/serving-image/Dockerfile infra/serving-image/entrypoint.sh \
  serving/__init__.py serving/tfs_config.py; find serving/modelserver -name '*.py' | LC_ALL=C sort | xargs cat; } \
  | sha256sum | cut -c1-16)"
if [[ "$FORCE" != 1 ]] && have_image "$TAG"; then
  built_hash="$(docker image inspect -f '{{ index .Config.Labels "org.tfrollout.src-hash" }}' "$TAG" 2>/dev/null || true)"
  if [[ "$built_hash" == "$SRC_HASH" ]]; then
    log "$TAG exists (source $SRC_HASH); skipping build (--force to rebuild)"
    echo "$TAG"; exit 0
  fi
  log "$TAG exists but was built from other sources (${built_hash:-unknown} != $SRC_HASH); rebuilding"
fi

start=$(date +%s)
if ! have_image "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install -y debootstrap)"; exit 1; }
  rootfs="$(mktemp -d /tmp/tfr-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap --variant=minbase bookworm -> $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "docker import -> $BASE_IMAGE"
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >&2
  rm -rf "$rootfs"; trap - EXIT
fi

ctx="$(mktemp -d /tmp/tfr-image-ctx.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
cp "$HERE/Dockerfile" "$HERE/entrypoint.sh" "$ctx/"
mkdir -p "$ctx/ca" "$ctx/src/serving"
# The host's locally added CA certificates (re-signed HTTPS), see shared/README.md.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/"
fi
cp "$ROOT/serving/__init__.py" "$ROOT/serving/tfs_config.py" "$ctx/src/serving/"
(cd "$ROOT/serving" && tar -c --exclude='__pycache__' modelserver) | tar -C "$ctx/src/serving" -x

log "docker build $TAG (TF $TF_VERSION)"
DOCKER_BUILDKIT=0 docker build --network host \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TF_VERSION=$TF_VERSION" \
  --label "org.tfrollout.tf-version=$TF_VERSION" --label "org.tfrollout.src-hash=$SRC_HASH" \
  -t "$TAG" "$ctx" >&2
log "built $TAG in $(( $(date +%s) - start )) s; size $(docker image inspect -f '{{.Size}}' "$TAG") bytes"
echo "$TAG"

#!/usr/bin/env bash
# Create the project-local virtual environment `.venv` and install the pinned
# OpenMMLab stack into it (see README.md, "Setup").
#
# Idempotent: a stamp file records a hash of this script and requirements/*.txt;
# when it matches, nothing is done.  The mmcv wheel with compiled CPU ops is built
# once from the sdist and cached in $MMGPD_WHEEL_CACHE (default
# ~/.cache/mmgpd/wheels), keyed by mmcv, torch and Python versions.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMGPD_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="${MMGPD_WHEEL_CACHE:-$HOME/.cache/mmgpd/wheels}"

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

log() { printf '[mmgpd install] %s\n' "$*"; }

stamp_hash() {
  cat "$ROOT/tools/install_env.sh" "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.mmgpd-install-stamp"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_hash)" ]]; then
  log "environment $VENV is up to date (delete $STAMP to force a reinstall)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# Build tooling first: mmcv's and mmengine's setup import pkg_resources, which
# setuptools >= 82 no longer ships.
"${PIP[@]}" install -q --upgrade "pip>=23" -r "$ROOT/requirements/build.txt"

log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (standard wheels)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG"
WHEEL_DIR="$CACHE/$KEY"
if ! compgen -G "$WHEEL_DIR/mmcv-$MMCV_VERSION-*.whl" > /dev/null; then
  log "no cached mmcv wheel for $KEY: building mmcv $MMCV_VERSION with CPU ops from source (~10 min on 2 cores)"
  BUILD="$(mktemp -d "${TMPDIR:-/tmp}/mmgpd-mmcv-build.XXXXXX")"
  trap 'rm -rf "$BUILD"' EXIT
  # --no-build-isolation: the sdist's setup.py imports pkg_resources and torch,
  # both of which only the venv has at the right versions.
  "${PIP[@]}" download -q --no-binary :all: --no-deps --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
  SRC="$BUILD/mmcv-$MMCV_VERSION"
  # torch >= 2.14 headers require C++20; mmcv 2.1.0 hard-codes -std=c++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  grep -q -- '-std=c++20' "$SRC/setup.py" || { log "could not patch the C++ standard in $SRC/setup.py"; exit 1; }
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" "$SRC"
  mkdir -p "$WHEEL_DIR"
  # Atomic publish into the cache: copy to a temp name, then rename.
  for whl in "$BUILD"/dist/mmcv-*.whl; do
    cp "$whl" "$WHEEL_DIR/.tmp-$(basename "$whl")"
    mv "$WHEEL_DIR/.tmp-$(basename "$whl")" "$WHEEL_DIR/$(basename "$whl")"
  done
else
  log "using cached mmcv wheel from $WHEEL_DIR"
fi

log "installing mmcv (compiled CPU ops), mmengine, mmpretrain, mmdet and the test tools"
"${PIP[@]}" install -q "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl -r "$ROOT/requirements/runtime.txt" \
  -r "$ROOT/requirements/tests.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

log "installing mmgpd (editable)"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"

log "checking the stack"
"$PY" "$ROOT/tools/check_env.py"

stamp_hash > "$STAMP"
log "done: activate with 'source $VENV/bin/activate'"

#!/usr/bin/env bash
# The ARM lane: pcedge's C++ writer built for aarch64 (a Jetson's CPU) and tested under user-mode qemu.
#
# An arm64 Python 3.11 is unpacked from Debian's arm64 packages (apt-get download with its own lists, then
# dpkg -x: no root tricks, no foreign architecture added to this machine); numpy, OpenCV, pytest and
# hypothesis come as aarch64 wheels (pip --target --platform). The writer is cross-compiled with Debian's
# g++-aarch64-linux-gnu against that Python's headers, and the masks, defense, alarm, preprocessing and writer
# tests (the NEON float16 path included) run under qemu-aarch64. ONNX Runtime's aarch64 wheel crashes under
# this qemu, so inference is not part of the lane. Without the tools it says what is missing and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${PCEDGE_ARM_ROOT:-${PCEDGE_CACHE:-$HOME/.cache/pcedge}/arm64-lane}
PY_HOST=${PYTHON_HOST:-.venv/bin/python}
for tool in qemu-aarch64 aarch64-linux-gnu-g++ apt-get dpkg; do
  if ! command -v "$tool" >/dev/null; then
    echo "ARM lane SKIPPED: $tool is missing (Debian packages qemu-user and g++-aarch64-linux-gnu; make system-deps)"
    exit 0
  fi
done

SYSROOT=$ROOT/sysroot
if [ ! -x "$SYSROOT/usr/bin/python3.11" ]; then
  echo "ARM lane: fetching Debian's arm64 Python 3.11 into $SYSROOT"
  mkdir -p "$ROOT/lists/partial" "$ROOT/cache/archives/partial" "$ROOT/debs" "$SYSROOT"
  APT=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Dir::State::Lists="$ROOT/lists" -o Dir::Cache="$ROOT/cache")
  apt-get update -qq "${APT[@]}" 2>&1 | grep -v "unsandboxed" || true
  (cd "$ROOT/debs" && apt-get download -qq "${APT[@]}" python3.11-minimal libpython3.11-minimal libpython3.11-stdlib \
      libpython3.11-dev libpython3.11 libc6 libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libstdc++6 \
      libgcc-s1 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2 \
      libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 media-types 2>&1 | grep -v "unsandboxed" || true)
  for deb in "$ROOT"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
fi
# A Jetson-class core (Orin's Cortex-A78AE is ARMv8.2 with fp16 and dot product, like the A76), not qemu's default
# "max": under qemu 7.2 "max" (SVE), numpy's float32 matrix products return NaN, which a Jetson never sees.
export QEMU_CPU=${QEMU_CPU:-cortex-a76}
PY=(qemu-aarch64 -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11")

SITE=$ROOT/site-packages
if [ ! -d "$SITE/numpy" ]; then
  echo "ARM lane: aarch64 wheels (numpy, opencv-python-headless, pytest, hypothesis) into $SITE"
  "$PY_HOST" -m pip install -q --disable-pip-version-check --target "$SITE" --python-version 3.11 --implementation cp \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --only-binary=:all: \
    numpy opencv-python-headless pytest hypothesis 2>&1 | grep -v "^WARNING: Location" || true
fi

STAGE=$ROOT/stage
echo "ARM lane: cross-compiling the C++ writer for aarch64"
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -r pcedge "$STAGE/"
find "$STAGE/pcedge" -name "__pycache__" -type d -prune -exec rm -rf {} +
find "$STAGE/pcedge" -name "*.so" -delete
PYBIND_INCLUDE=$("$PY_HOST" -c "import pybind11; print(pybind11.get_include())")
aarch64-linux-gnu-g++ -O3 -std=c++17 -shared -fPIC -fvisibility=hidden -pthread -Icpp_ext -I"$PYBIND_INCLUDE" \
  -I"$SYSROOT/usr/include/python3.11" -idirafter "$SYSROOT/usr/include" \
  cpp_ext/masking_cpu.cpp -o "$STAGE/pcedge/_masking_cpu.cpython-311-aarch64-linux-gnu.so"
"${PY[@]}" -c "import platform, sys; sys.path[:0] = ['$STAGE', '$SITE']; from pcedge import _masking_cpu as m; \
print(f'ARM lane: {platform.machine()} Python {platform.python_version()}, writer built, float16 path: {m.half_conversion_path}')"

echo "ARM lane: masks, defense, alarm, preprocessing and writer tests under qemu-aarch64"
# the staged package first, then the wheels, then the repository (for tests/): the x86 build is never imported
# (-P keeps the working directory off sys.path)
PYTHONPATH="$STAGE:$SITE:$PWD" HYPOTHESIS_PROFILE=dev PCEDGE_EXAMPLES_SCALE=${PCEDGE_EXAMPLES_SCALE:-0.05} \
  PCEDGE_HALF_STEP=${PCEDGE_HALF_STEP:-4099} \
  "${PY[@]}" -P -m pytest -q -p no:cacheprovider --import-mode=append tests/test_masks.py tests/test_defense.py tests/test_alarm.py \
  tests/runtime/test_masking.py "$@"

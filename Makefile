# medsynth — see README.md. Every target installs what it needs (make setup is idempotent).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MEDSYNTH := $(BIN)/medsynth
SD_SCRIPTS := vendor/sd-scripts
# CPU builds that sd-scripts imports cleanly with (PyPI's torchvision beside torch 2.13.0 does not import)
KOHYA_CPU_TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup setup-kohya dataset train test e2e bench gpu-wheels gpu-smoke clean

$(BIN)/medsynth: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/medsynth
	@git submodule update --init $(SD_SCRIPTS) 2>/dev/null \
	  || { test -f $(SD_SCRIPTS)/sdxl_train_network.py && echo "vendor/sd-scripts: present (not a git checkout)"; } \
	  || echo "NOTE: could not fetch vendor/sd-scripts (offline?). Dataset building and tests work without it;" \
	          "training needs it: on a machine with network run 'git submodule update --init', or unpack" \
	          "kohya-ss/sd-scripts at commit $$(git ls-tree HEAD $(SD_SCRIPTS) | awk '{print $$3}') into $(SD_SCRIPTS)."

# sd-scripts' own Python requirements (for training, make e2e and the tests that run sd-scripts' parsers)
setup-kohya: setup
	@test -f $(SD_SCRIPTS)/requirements.txt || { echo "error: $(SD_SCRIPTS) is empty: run 'make setup' with network first"; exit 1; }
	grep -v '^-e' $(SD_SCRIPTS)/requirements.txt > $(VENV)/kohya-requirements.txt
	$(BIN)/python -m pip install -q $(KOHYA_CPU_TORCH) -r $(VENV)/kohya-requirements.txt open_clip_torch tensorboard

dataset: setup
	$(MEDSYNTH) dataset build

train: setup
	$(MEDSYNTH) train

test: setup
	$(BIN)/python -m pytest -q

# real CPU training run with a random-weight SDXL (needs ~22 GB RAM, a few minutes on 2 cores)
e2e: setup-kohya
	$(BIN)/python -m pytest -m e2e -q tests/e2e

bench: setup
	$(BIN)/python bench/bench_captions.py
	$(BIN)/python bench/bench_images.py
	$(BIN)/python bench/bench_train_dry_run.py
	$(BIN)/python bench/bench_review.py
	$(BIN)/python bench/bench_generate.py

# the wheels the GPU machine lacks (sd-scripts' pins), into the git-ignored .whl/
gpu-wheels: setup-kohya
	PY=$(BIN)/python tools/gpu_wheels.sh

# on a CUDA machine with no network: python3 + the carried .whl/ (make gpu-wheels first); figures -> $$OUT
gpu-smoke:
	bash bench/gpu_smoke.sh

clean:
	rm -rf runs build

# medsynth — see README.md. Every target installs what it needs (make setup is idempotent).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MEDSYNTH := $(BIN)/medsynth
SD_SCRIPTS := vendor/sd-scripts
# CPU builds that sd-scripts imports cleanly with (PyPI's torchvision beside torch 2.13.0 does not import)
KOHYA_CPU_TORCH := torch==2.14.1 torchvision==0.29.1
# the tested versions (pip constraints files, CPython 3.11): make setup's and make setup-kohya's; `make lock` renews them
LOCK       := requirements/lock.txt
KOHYA_LOCK := requirements/lock-kohya.txt
LOCK_PY    := 3.11
# "-c FILE" when the venv's Python is the locks' one; on another Python nothing (the newest releases that fit) and a note
constrain = $$($(BIN)/python -c 'import sys; v = "%d.%d" % sys.version_info[:2]; print("-c $(1)") if v == "$(LOCK_PY)" else print("NOTE: $(1) is for Python $(LOCK_PY), not " + v + ": installing unlocked versions", file=sys.stderr)')
LATEST     := .venv-latest
LOCK_VENV  := build/lock-venv

.PHONY: setup setup-kohya dataset train benchmark test test-latest lock e2e bench gpu-wheels gpu-smoke clean

$(BIN)/medsynth: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,benchmark]' $(call constrain,$(LOCK))
	@touch $@

setup: $(BIN)/medsynth
	@git submodule update --init $(SD_SCRIPTS) 2>/dev/null \
	  || { test -f $(SD_SCRIPTS)/sdxl_train_network.py && echo "vendor/sd-scripts: present (not a git checkout)"; } \
	  || echo "NOTE: could not fetch vendor/sd-scripts (offline?). Dataset building and tests work without it;" \
	          "training needs it: on a machine with network run 'git submodule update --init', or unpack" \
	          "kohya-ss/sd-scripts at commit $$(git ls-tree HEAD $(SD_SCRIPTS) | awk '{print $$3}') into $(SD_SCRIPTS)."

# sd-scripts' own Python requirements (for training, make e2e and the tests that run sd-scripts' parsers), and
# lycoris-lora (the lycoris extra: pure Python; its torch, einops, safetensors, ... are sd-scripts' too)
setup-kohya: setup
	@test -f $(SD_SCRIPTS)/requirements.txt || { echo "error: $(SD_SCRIPTS) is empty: run 'make setup' with network first"; exit 1; }
	grep -v '^-e' $(SD_SCRIPTS)/requirements.txt > $(VENV)/kohya-requirements.txt
	$(BIN)/python -m pip install -q $(KOHYA_CPU_TORCH) -r $(VENV)/kohya-requirements.txt open_clip_torch tensorboard \
	  -e '.[lycoris]' $(call constrain,$(KOHYA_LOCK))

dataset: setup
	$(MEDSYNTH) dataset build

train: setup
	$(MEDSYNTH) train

# the benchmark's whole path on the demo data: a patient-level split, a stand-in synthetic set (augmented training
# melanomas: no GPU draws SDXL images here; tools/standin_synthetic.py), then every arm at 64 px on the CPU
BENCH_OUT := build/demo-benchmark
DEMO_CSV  := datasets/demo/metadata.csv
benchmark: setup
	$(MEDSYNTH) dataset split --csv $(DEMO_CSV) --folds 5 --out $(BENCH_OUT)/split.csv
	$(BIN)/python tools/standin_synthetic.py --csv $(DEMO_CSV) --images datasets/demo/images --split $(BENCH_OUT)/split.csv \
	  --test-fold 0 --count 80 --out $(BENCH_OUT)/synthetic
	$(MEDSYNTH) benchmark --csv $(DEMO_CSV) --images datasets/demo/images --split $(BENCH_OUT)/split.csv --test-fold 0 \
	  --synthetic $(BENCH_OUT)/synthetic --out $(BENCH_OUT) --image-size 64 --epochs 5 --seeds 3

test: setup
	$(BIN)/python -m pytest -q

# the tests on the newest releases of everything (a fresh $(LATEST), no lock), then what differs from $(LOCK):
# the drift to act on (fix the code or the lower bounds in pyproject.toml, then `make lock`)
test-latest:
	rm -rf $(LATEST) && $(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test,benchmark]'
	@$(LATEST)/bin/python -m pytest -q; rc=$$?; echo; \
	$(LATEST)/bin/python requirements/drift.py $(LOCK); \
	if [ $$rc = 0 ]; then echo "tests on the newest releases: passed"; else echo "tests on the newest releases: FAILED (pytest exit $$rc)"; fi; \
	exit $$rc

# re-resolve both locks from today's releases in a throwaway venv; review `git diff requirements/`, then make test
# (and make e2e for the kohya one). setuptools is removed first so the lock gets tensorboard's, not the venv's seed.
lock:
	@$(PY) -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(LOCK_PY)")' \
	  || { echo "error: the locks are resolved on Python $(LOCK_PY): make lock PY=python$(LOCK_PY)"; exit 1; }
	rm -rf $(LOCK_VENV) && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip uninstall -q -y setuptools
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[test,benchmark]'
	{ grep '^#' $(LOCK); $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable --exclude pip; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	@test -f $(SD_SCRIPTS)/requirements.txt || { echo "NOTE: $(SD_SCRIPTS) is empty: $(KOHYA_LOCK) left as it is"; exit 0; } \
	  && grep -v '^-e' $(SD_SCRIPTS)/requirements.txt > $(LOCK_VENV)/kohya-requirements.txt \
	  && $(LOCK_VENV)/bin/python -m pip install -q $(KOHYA_CPU_TORCH) -r $(LOCK_VENV)/kohya-requirements.txt open_clip_torch tensorboard \
	    -e '.[lycoris]' \
	  && { grep '^#' $(KOHYA_LOCK); $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable --exclude pip; } > $(KOHYA_LOCK).new \
	  && mv $(KOHYA_LOCK).new $(KOHYA_LOCK)

# real CPU training run with a random-weight SDXL (needs ~22 GB RAM, a few minutes on 2 cores)
e2e: setup-kohya
	$(BIN)/python -m pytest -m e2e -q tests/e2e

bench: setup
	$(BIN)/python bench/bench_captions.py
	$(BIN)/python bench/bench_images.py
	$(BIN)/python bench/bench_cli_help.py
	$(BIN)/python bench/bench_train_dry_run.py
	$(BIN)/python bench/bench_review.py
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_benchmark.py

# the wheels the GPU machine lacks (sd-scripts' pins), into the git-ignored .whl/
gpu-wheels: setup-kohya
	PY=$(BIN)/python tools/gpu_wheels.sh

# on a CUDA machine with no network: python3 + the carried .whl/ (make gpu-wheels first); figures -> $$OUT
gpu-smoke:
	bash bench/gpu_smoke.sh

clean:
	rm -rf runs build

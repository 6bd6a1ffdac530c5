# tmtcam — one venv, a handful of commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Nothing touches the network: albumentations' update check off, W&B offline unless a key is configured.
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export OMP_WAIT_POLICY ?= PASSIVE
ARGS   ?=  # extra options of the demo, e.g. ARGS="--accelerator gpu"
# The tested versions of every dependency; `make install CONSTRAINTS=` takes PyPI's newest (but torch).
CONSTRAINTS ?= constraints.txt
PIN    := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.DEFAULT_GOAL := help
.PHONY: help install test test-fast train-tmt train-promptcam bench lint

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)  ## create .venv with torch (local wheels), tmtcam and dev tools, at the tested versions
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIN) torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q $(PIN) -e '.[dev]'
	$(PY) -c "import tmtcam, data_modules, faiss, timm, lightning; print('tmtcam installed:', tmtcam.__version__)"

test:  ## the test suite, slow tests included (what CI runs)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast:  ## the test suite without @slow tests
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

train-tmt:  ## embedded synthetic pair: pre-train, adapt with finetune and tmt, print the mIoU table
	$(PY) -m tmtcam demo tmt --out runs/train-tmt $(ARGS)

train-promptcam:  ## embedded synthetic species: pre-train, learn prompts, write trait heatmaps
	$(PY) -m tmtcam demo promptcam --out runs/train-promptcam $(ARGS)

bench:  ## speed/cost benchmarks -> docs/benchmarks.md and runs/bench/bench.json
	$(PY) -m tmtcam bench all --out runs/bench --doc docs/benchmarks.md

lint:  ## ruff: lint rules and formatting (`ruff format tmtcam data_modules tests` fixes the latter)
	$(PY) -m ruff check tmtcam data_modules tests
	$(PY) -m ruff format --check tmtcam data_modules tests

# Two commands for a newcomer: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export PYTHONUNBUFFERED := 1
# torch on a busy 2-core machine: spinning OpenMP workers make 2 threads 10-50x slower than 1 (measured)
export OMP_WAIT_POLICY ?= PASSIVE
# Each ROS 2 process of ours picks a random domain unless told otherwise, so runs do not cross-talk.
export ROS_LOCALHOST_ONLY ?= 1

.PHONY: setup demo test bench lint clean policy
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m etc_training.cli demo --out runs/demo

test:
	@bash scripts/setup.sh --with-browser
	bash scripts/typecheck.sh
	bash scripts/lint.sh
	$(PY) -m pytest -q tests -m "not realtime"
	$(PY) -m pytest -q tests -m realtime
	bash scripts/test_py310.sh

# Reproduces the shipped sim policy bundle (policies/sim_pickup/): data, training, evaluation, export.
policy: setup
	bash scripts/make_policy.sh

bench: setup
	$(PY) -m etc_training.cli bench all --out runs/bench

lint: setup
	bash scripts/lint.sh
	$(VENV)/bin/hadolint --config docker/hadolint.yaml docker/Dockerfile.robot docker/Dockerfile.train

clean:
	rm -rf runs .pytest_cache

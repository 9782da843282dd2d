# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export MUJOCO_GL ?= egl

DEMO_DIR ?= runs/demo
DEMO_ARGS ?= task=cartpole-swingup steps=8000 seed=1 model_size=1 \
	model.latent_dim=64 model.mlp_dim=128 model.enc_dim=128 batch_size=128 \
	planner.steps=4 planner.num_samples=64 planner.num_elites=8 planner.num_pi_trajs=4 \
	seed_steps=1000 pretrain_updates=500 eval_freq=2000 eval_episodes=3 checkpoint_freq=2000 \
	work_dir=$(DEMO_DIR)

# Offline multi-task pretraining on a dataset written from real rollouts (random actions) of 4 DMControl tasks.
OFFLINE_DIR ?= runs/demo-offline
OFFLINE_TASKS ?= [cartpole-swingup,cartpole-balance,reacher-easy,finger-spin]
OFFLINE_ARGS ?= mode=offline model_size=1 model.latent_dim=64 model.mlp_dim=128 model.enc_dim=128 model.task_dim=16 \
	batch_size=256 steps=3000 eval_freq=1500 eval_episodes=3 checkpoint_freq=1500 \
	planner.steps=4 planner.num_samples=64 planner.num_elites=8 planner.num_pi_trajs=4

# TorchRL's own TD-MPC2 stack (torchrl >= 0.15, as dated nightlies): a second environment, where MBDPO
# plugs into TorchRL's TD-MPC2 recipe (trainer=mbdpo) and the drop-in tests run.
VENV_NEXT ?= .venv-next
PY_NEXT := $(VENV_NEXT)/bin/python

.PHONY: setup setup-next system-deps demo demo-offline test test-next lint bench docs docs-check wheel-check clean

setup: system-deps $(VENV)/.installed

# Vulkan (Mesa >= 25 lavapipe) for ManiSkill3: installed only as root or with passwordless sudo, otherwise
# one line says why the ManiSkill tests will be skipped. Never fails the build.
system-deps:
	@scripts/install_maniskill_vulkan.sh

$(VENV)/.installed: setup.py constraints.txt requirements/common.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,myosuite,metaworld,maniskill,pusht]"
	$(PIP) install -q --no-deps metaworld==3.1.1  # its mujoco==3.3.0 pin is deliberately ignored (envs/metaworld.py)
	touch $@

setup-next: $(VENV_NEXT)/.installed

$(VENV_NEXT)/.installed: setup.py constraints.txt requirements/common.txt requirements/torchrl-next.txt
	test -x $(PY_NEXT) || python3 -m venv $(VENV_NEXT)
	$(PY_NEXT) -m pip install -q -U pip
	$(PY_NEXT) -m pip install -q torch==2.13.0
	$(PY_NEXT) -m pip install -q -c constraints.txt -r requirements/torchrl-next.txt
	$(PY_NEXT) -m pip install -q --no-deps -e .  # its torchrl==0.14.1 pin is the default install's, not this one's
	touch $@

demo: setup
	rm -rf $(DEMO_DIR)  # the demo's own folder: a new demo replaces the last one
	$(VENV)/bin/mbdpo-train $(DEMO_ARGS)

demo-offline: setup
	rm -rf $(OFFLINE_DIR)
	$(VENV)/bin/mbdpo-dataset generate out=$(OFFLINE_DIR)/data "tasks=$(OFFLINE_TASKS)" episodes_per_task=20
	$(VENV)/bin/mbdpo-train $(OFFLINE_ARGS) data_dir=$(OFFLINE_DIR)/data "task=$(OFFLINE_TASKS)" work_dir=$(OFFLINE_DIR)/run

# The suite in parallel, one pytest worker per core (tests pin torch to one thread each), a test file per worker.
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile

# The drop-in tests under TorchRL's TD-MPC2 stack (the default `make test` checks their import error there).
test-next: setup-next
	$(PY_NEXT) -m pytest -q test/test_torchrl_dropin.py test/contract/test_contract_readme.py

# ruff's settings live in pyproject.toml
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) benchmarks/run.py

# The documentation site (Sphinx, MyST Markdown, autodoc) with warnings as errors: docs/_build/html/index.html
docs: setup
	$(PIP) install -q -c constraints.txt -e ".[docs]"
	$(PY) -m sphinx -W --keep-going -E -q -b html docs docs/_build/html

# The site in a real browser: the build above, internal links, then pages rendered by headless Chromium
# (Debian's package, installed here as root where it is missing).
docs-check: docs
	@command -v chromium >/dev/null || scripts/install_chromium.sh
	$(PY) scripts/docs_check.py

# The package as users get it: sdist and wheel built, the wheel installed in a fresh venv, a short run from it.
wheel-check: setup
	scripts/wheel_check.sh

clean:
	rm -rf $(VENV) $(VENV_NEXT) runs docs/_build

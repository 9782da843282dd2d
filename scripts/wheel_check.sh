#!/usr/bin/env bash
# The package as users get it: build the sdist and the wheel (python -m build), install the wheel (not editable)
# into a fresh venv beside torch 2.13.0, then run a short training from it outside the source tree. Fails if a
# data file is left out: the custom DMControl tasks' XMLs (cheetah-run-backwards), the commands' YAML configs
# (every command reads one), the published curves (mbdpo-compare reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "building sdist and wheel ..."
.venv/bin/python -m build --sdist --wheel --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
unzip -l "$WORK"/dist/*.whl > "$WORK/wheel.txt"
tar tzf "$WORK"/dist/*.tar.gz > "$WORK/sdist.txt"
for f in envs/custom_tasks/cheetah.xml config/train.yaml config/dmo_train.yaml config/dmo_compare.yaml data/official_curves.csv; do
  grep -q "torchrl_mbdpo/$f" "$WORK/wheel.txt" || { echo "the wheel lacks torchrl_mbdpo/$f"; exit 1; }
  grep -q "torchrl_mbdpo/$f" "$WORK/sdist.txt" || { echo "the sdist lacks torchrl_mbdpo/$f"; exit 1; }
done
echo "installing the wheel into a fresh venv ..."
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q -U pip
"$WORK/venv/bin/python" -m pip install -q torch==2.13.0
"$WORK/venv/bin/python" -m pip install -q -c "$REPO/constraints.txt" "$WORK"/dist/*.whl
cd "$WORK"  # not the source tree: everything comes from the installed wheel
"$WORK/venv/bin/python" -c "import torchrl_mbdpo, sys; assert 'site-packages' in torchrl_mbdpo.__file__, torchrl_mbdpo.__file__; print('torchrl_mbdpo', torchrl_mbdpo.__version__)"
TINY="model_size=1 model.latent_dim=16 model.mlp_dim=32 model.enc_dim=32 batch_size=16 planner.steps=2 planner.num_samples=8 planner.num_elites=2 planner.num_pi_trajs=2"
"$WORK/venv/bin/mbdpo-train" task=cheetah-run-backwards steps=20 seed_steps=10 pretrain_updates=2 eval_episodes=1 progress=false threads=1 $TINY
"$WORK/venv/bin/mbdpo-compare" run=false "tasks=[cheetah-run-backwards]" "algos=[mbdpo]" "seeds=[1]" steps=20
test -s runs/compare/cheetah-run-backwards.png
"$WORK/venv/bin/mbdpo-dmo" train task=pendulum-swingup steps=64 horizon=4 num_envs=2 seed_steps=16 pretrain_updates=2 \
  critic_updates=1 local_model_updates=1 eval_freq=64 eval_episodes=1 progress=false threads=1 model_size=1 model.latent_dim=16 \
  model.mlp_dim=32 model.enc_dim=32 batch_size=16
test -s runs/dmo/pendulum-swingup/seed1/checkpoints/latest.pt
echo "wheel check: OK"

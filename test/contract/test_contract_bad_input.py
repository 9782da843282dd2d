"""Bad input, every class of it, on every command: one line on stderr naming the problem and the fix, exit 2, and
the working folder exactly as it was (nothing written). Each command runs in a process of its own
(:func:`contract_cases.run`) in a fresh folder holding only its inputs; two cases also run through the installed
console script itself."""

import os
import subprocess
import sys
from pathlib import Path

import contract_cases as C
import pytest
import torch

# (command, arguments, a fragment of the one line). "{ckpt}": a finished online run's checkpoint (no complete
# episode, no score network); "{short_ckpt}": a cartpole-balance run shorter than its first episode; "{dmo_ckpt}": a
# DMO one; "{play}": a play dataset; "afile": a file in the folder.
CASES = [
    # unknown keys: typos, +additions, keys inside groups and dict-style values, with the nearest valid name
    ("mbdpo-train", ["planer.steps=3"], "unknown setting 'planer.steps'. Did you mean planner.steps?"),
    ("mbdpo-train", ["+planer.steps=3"], "Did you mean planner.steps?"),
    ("mbdpo-train", ["+planner.score_sorce=network"], "Did you mean planner.score_source?"),
    ("mbdpo-train", ["planner={steps:3,score_sorce:mc}"], "unknown setting 'planner.score_sorce'. Did you mean planner.score_source?"),
    ("mbdpo-dmo", ["train", "+horizn=3"], "Did you mean horizon?"),
    ("mbdpo-train", ["algo=dmo"], "moved. DMO-SAPO trains with `mbdpo-dmo train task=...`"),
    ("mbdpo-train", ["dmo.horizon=3"], "moved. DMO-SAPO trains with `mbdpo-dmo train task=...`"),
    ("mbdpo-eval", ["+planer.steps=3"], "Did you mean planner.steps?"),
    ("mbdpo-dmo", ["compare", "+dmo.iteratons=2"], "Did you mean dmo.iterations?"),
    ("mbdpo-dmo", ["compare", "ppo={iteratons:2}"], "Did you mean ppo.iterations?"),
    # values out of range or of the wrong type
    ("mbdpo-train", ["steps=-5"], "steps must be >= 1, got -5"),
    ("mbdpo-train", ["steps=abc"], "steps=abc"),
    ("mbdpo-train", ["eval_episodes=0"], "eval_episodes must be >= 1"),
    ("mbdpo-train", ["model_size=7"], "model_size=7 is not a known size"),
    ("mbdpo-train", ["task=cheetah-rn"], "Did you mean 'cheetah-run'"),
    ("mbdpo-dmo", ["train", "forward_model=magic"], "forward_model must be one of"),
    ("mbdpo-dmo", ["train", "task=nosuchtask"], "Unknown task"),
    ("mbdpo-dmo", ["train", "collect_steps=2"], "collect_steps applies to forward_model=learned"),
    ("mbdpo-train", ["planner.score_source=magic"], "planner.score_source must be 'mc' or 'network'"),
    ("mbdpo-eval", ["checkpoint={ckpt}", "eval_episodes=0"], "eval_episodes must be >= 1"),
    ("mbdpo-compare", ["steps=0"], "steps must be >= 1"),
    ("mbdpo-export", ["checkpoint={ckpt}", "out=x.pt", "format=tdmpc3"], "format must be one of mbdpo, tdmpc2"),
    ("mbdpo-dmo", ["world_model", "data={play}", "updates=0"], "updates must be >= 1"),
    ("mbdpo-dmo", ["world_model", "data={play}", "obs=voxels"], "obs must be one of pixels, state"),
    # cross-field rules
    ("mbdpo-dmo", ["reward", "data={play}", "obs=state", "image_size=64"], "image_size sizes frames: with obs=state there are none"),
    (
        "mbdpo-train",
        ["planner.num_elites=64", "planner.num_samples=16", "planner.num_pi_trajs=2"],
        "planner.num_elites=64 must lie in [1, num",
    ),
    ("mbdpo-train", ["algo=tdmpc2", "mppi.num_elites=64", "mppi.num_samples=16", "mppi.num_pi_trajs=2"], "mppi.num_elites=64 must lie in"),
    ("mbdpo-train", ["task=[cartpole-balance,cartpole-swingup]"], "mode=online trains one task"),
    ("mbdpo-train", ["task=gym:CartPole-v1"], "continuous Box action space"),
    # a device that is not there, a path of the wrong kind, a missing input
    ("mbdpo-train", ["device=cuda"], "no CUDA GPU"),
    ("mbdpo-eval", ["checkpoint={ckpt}", "device=cuda:0"], "no CUDA GPU"),
    ("mbdpo-train", ["work_dir=afile"], "work_dir=afile is a file"),
    ("mbdpo-train", ["work_dir=afile/run"], "afile is a file"),
    ("mbdpo-train", ["mode=offline"], "needs data_dir=<path>"),
    ("mbdpo-eval", ["checkpoint=nope.pt"], "No checkpoint at nope.pt"),
    ("mbdpo-dataset", ["check"], "needs data_dir=<path>"),
    ("mbdpo-dataset", ["check", "data_dir=."], "no chunk_<i>.pt files"),
    ("mbdpo-eval", ["checkpoint={offline_ckpt}", "task=walker-walk"], "needs fine-tuning first: mbdpo-finetune"),
    ("mbdpo-dataset", ["frobnicate"], "usage: mbdpo-dataset {check|export|generate}"),
    ("mbdpo-dataset", ["export", "out=exported"], "needs checkpoints="),
    ("mbdpo-finetune", [], "needs checkpoint=<path>"),
    ("mbdpo-finetune", ["checkpoint={ckpt}"], "single-task checkpoint"),
    ("mbdpo-import", [], "needs checkpoint="),
    ("mbdpo-import", ["checkpoint=nope.pt"], "No file at nope.pt"),
    ("mbdpo-export", ["checkpoint={ckpt}"], "needs out="),
    ("mbdpo-dmo", [], "usage: mbdpo-dmo {compare|dataset|policy|ppo|reward|train|world_model}"),
    ("mbdpo-dmo", ["datasets"], "usage: mbdpo-dmo"),
    ("mbdpo-dmo", ["world_model", "data=nowhere"], "No play dataset at nowhere"),
    ("mbdpo-dmo", ["policy"], "needs world_model=<...>, reward=<...>, data=<...>"),
    ("mbdpo-dmo", ["dataset", "out=afile"], "out=afile is a file"),
    ("mbdpo-dmo", ["dataset", "out={play}"], "is not empty; choose a new folder"),
    ("mbdpo-dataset", ["generate", "out={dataset}", "tasks=[cartpole-balance]"], "already holds chunk files"),
    # an untrained network asked for
    ("mbdpo-train", ["planner.score_source=network"], "loss.use_score_network=false never trains"),
    ("mbdpo-eval", ["checkpoint={ckpt}", "planner.score_source=network"], "never trained"),
    ("mbdpo-eval", ["checkpoint={dmo_ckpt}", "planner.steps=3"], "planner.* / mppi.* overrides do not apply"),
    ("mbdpo-eval", ["checkpoint={ckpt}", "mppi.iterations=3"], "its planner's settings are planner.*"),
    # data that cannot be used as asked
    ("mbdpo-dataset", ["export", "checkpoints=[{short_ckpt}]", "out=exported"], "no complete episode"),
    # refuse or resume
    ("mbdpo-train", ["resume=true", "work_dir=nothing_here"], "holds no checkpoint to continue: drop resume=true"),
    ("mbdpo-train", ["work_dir={run}"], "already holds a run. Pass resume=true"),
    ("mbdpo-train", [*C.ONLINE, "work_dir={run}", "resume=true", "model_size=5"], "model_size: checkpoint has 1, requested 5"),
]


@pytest.fixture(scope="module")
def inputs(online_run, offline_run, dataset, workspace):
    """Paths the cases refer to: a finished online run, a DMO checkpoint, a play dataset."""
    dmo = workspace / "dmo_for_eval"
    if not dmo.exists():
        out = C.run(workspace, "mbdpo-dmo", *C.DMO_SIM, "steps=16", "work_dir=dmo_for_eval")
        assert out.returncode == 0, C.explain(out)
    short = workspace / "short_cartpole"
    if not short.exists():
        args = [a for a in C.ONLINE if not a.startswith(("task=", "steps="))]
        out = C.run(workspace, "mbdpo-train", *args, "task=cartpole-balance", "steps=10", "work_dir=short_cartpole")
        assert out.returncode == 0, C.explain(out)
    play = workspace / "play_for_errors"
    if not play.exists():
        out = C.run(
            workspace, "mbdpo-dmo", "dataset", "out=play_for_errors", "episodes=2", "image_size=16", "episode_length=4", "progress=false"
        )
        assert out.returncode == 0, C.explain(out)
    return {
        "ckpt": online_run / "checkpoints" / "latest.pt",
        "dataset": dataset,
        "offline_ckpt": offline_run / "checkpoints" / "latest.pt",
        "run": online_run,
        "dmo_ckpt": dmo / "checkpoints" / "latest.pt",
        "short_ckpt": short / "checkpoints" / "latest.pt",
        "play": play,
    }


def _fill(text: str, inputs: dict) -> str:
    for key, value in inputs.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("command, args, fragment", CASES, ids=[f"{c} {' '.join(a)}" for c, a, _ in CASES])
def test_bad_input_gets_one_line_exit_2_and_nothing_written(command, args, fragment, inputs, tmp_path):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    args = [_fill(a, inputs) for a in args]
    (tmp_path / "afile").write_text("not a folder")
    watched = [tmp_path, *{Path(str(v)) for v in inputs.values() if Path(str(v)).is_dir()}]
    before = [_tree(folder) for folder in watched]
    ran = C.run(tmp_path, command, *args)
    code, out, err = ran.returncode, ran.stdout, ran.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, C.explain(ran)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert _fill(fragment, inputs) in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert [_tree(folder) for folder in watched] == before, "the command wrote something"


@pytest.mark.parametrize("args, fragment", [(["steps=-5"], "steps must be >= 1"), (["+planer.steps=3"], "Did you mean planner.steps?")])
def test_the_console_script_itself_gives_the_same_line(args, fragment, tmp_path):
    script = Path(sys.executable).with_name("mbdpo-train")
    out = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and fragment in out.stderr, C.explain(out)
    assert list(tmp_path.iterdir()) == []

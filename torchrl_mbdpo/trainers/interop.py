"""Checkpoints of the official MBDPO code and of TD-MPC2, in and out (``mbdpo-import``, ``mbdpo-export``).

The official code saves ``torch.save({"model": world_model.state_dict()})`` (``agent.save``). Its layout differs
from this library's in three ways, which is what this module converts:

* **input order.** Multi-task modules concatenate the task embedding right after the latent: ``[z, e, a]`` for
  dynamics, reward, energy and Q, ``[z, e, x, t_emb]`` for the score net. This library puts it last
  (``[z, a, e]``, ``[z, x, t_emb, e]``), so the columns of those first-layer weights are permuted.
* **Q ensemble.** Stacked parameters under ``_Qs.params.*`` with the same values again under
  ``_detach_Qs_params.*`` and the Polyak copy under ``_target_Qs_params.*``. TD-MPC2's released multi-task
  checkpoints predate that layout: functorch's ``ParameterList`` (``_Qs.params.<n>``, the n-th parameter of
  the member MLP, stacked over heads; ``_target_Qs.params.<n>``); per-head module lists (``_Qs.<head>.*``)
  are read too.
* **names.** ``NormedLinear`` is an ``nn.Linear`` with an ``ln`` child there, a ``Sequential`` here.

The architecture (observation and action sizes, latent, MLP and encoder widths, encoder depth, Q heads, bins,
tasks, task embedding, planning horizon, time embedding, termination head, pixel encoder) is read from the
tensor shapes. TD-MPC2 checkpoints have no energy network ``F`` and no score network: those start fresh (the
import's notes say so). Official checkpoints do not hold the energy normalisation statistics (spec §2.2): they
start at mean 0, std 1, as in the official code after a reload.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..data.task_sets import PADDED_DIMS, TASK_DIMS, TASK_SETS, task_set_of
from ..data.tdmpc2_dataset import tdmpc2_discount
from ..modules import MBDPOWorldModel, WorldModelConfig
from ..modules.layers import NormedLinear
from ..modules.world_model import MODEL_SIZES
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ModelOverrides, TrainConfig, to_container

__all__ = [
    "OFFICIAL_FORMATS",
    "import_checkpoint",
    "export_checkpoint",
    "official_state_dict",
    "read_official_state_dict",
    "infer_world_model_config",
]

OFFICIAL_FORMATS = ("mbdpo", "tdmpc2")
_TASK_SET_OF_SIZE = {len(tasks): name for name, tasks in TASK_SETS.items()}
_PARAM_LIST_NAMES = ("weight", "bias", "ln.weight", "ln.bias")  # functorch's order in a NormedLinear


# ----------------------------------------------------------------------------- layouts
def _module_specs(cfg: WorldModelConfig, fmt: str = "mbdpo") -> list[tuple]:
    """``(official prefix, our attribute, our input segments, official input order)`` of every MLP, in the
    official state-dict order. Segments are ``(name, size)``; the task embedding ``e`` has size 0 in
    single-task models."""
    L, A, T = cfg.latent_dim, cfg.action_dim, cfg.task_dim
    z, a, e = ("z", L), ("a", A), ("e", T)
    specs = []
    if cfg.obs_type == "state":
        specs.append(("_encoder.state", "encoder", [("obs", cfg.obs_dim), e], ["obs", "e"]))
    specs += [("_dynamics", "dynamics", [z, a, e], ["z", "e", "a"]), ("_reward", "reward_head", [z, a, e], ["z", "e", "a"])]
    if cfg.episodic:
        specs.append(("_termination", "done_head", [z, e], ["z", "e"]))
    specs.append(("_pi", "policy", [z, e], ["z", "e"]))
    if fmt == "mbdpo":
        specs.append(("_F", "energy", [z, a, e], ["z", "e", "a"]))
    return specs


def _score_spec(cfg: WorldModelConfig) -> tuple:
    L, T, HA = cfg.latent_dim, cfg.task_dim, cfg.horizon * cfg.action_dim
    return ("_score", "score_net", [("z", L), ("x", HA), ("t", cfg.time_embed_dim), ("e", T)], ["z", "e", "x", "t"])


def _q_segments(cfg: WorldModelConfig) -> tuple:
    return [("z", cfg.latent_dim), ("a", cfg.action_dim), ("e", cfg.task_dim)], ["z", "e", "a"]


def _mlp_tensors(net: nn.Sequential) -> list[tuple[str, torch.Tensor]]:
    """``(official suffix, our tensor)`` of an MLP built by :func:`~torchrl_mbdpo.modules.layers.mlp`."""
    out = []
    for i, layer in enumerate(net):
        if isinstance(layer, NormedLinear):
            linear = layer[0]
            norm = next(m for m in layer if isinstance(m, nn.LayerNorm))
            out += [
                (f"{i}.weight", linear.weight),
                (f"{i}.bias", linear.bias),
                (f"{i}.ln.weight", norm.weight),
                (f"{i}.ln.bias", norm.bias),
            ]
        elif isinstance(layer, nn.Linear):
            out += [(f"{i}.weight", layer.weight), (f"{i}.bias", layer.bias)]
        else:
            raise TypeError(f"Unexpected layer {layer!r} in an MLP")
    return out


def _q_keys(wm: MBDPOWorldModel) -> list[tuple[str, tuple]]:
    """``(official suffix, key in wm.q_params)`` of the stacked Q heads."""
    out = []
    for i, layer in enumerate(wm.qs.module.net._skeleton):
        if isinstance(layer, NormedLinear):
            norm = str(next(j for j, m in enumerate(layer) if isinstance(m, nn.LayerNorm)))
            out += [
                (f"{i}.weight", (str(i), "0", "weight")),
                (f"{i}.bias", (str(i), "0", "bias")),
                (f"{i}.ln.weight", (str(i), norm, "weight")),
                (f"{i}.ln.bias", (str(i), norm, "bias")),
            ]
        else:
            out += [(f"{i}.weight", (str(i), "weight")), (f"{i}.bias", (str(i), "bias"))]
    return out


def _rgb_tensors(wm: MBDPOWorldModel) -> list[tuple[str, torch.Tensor]]:
    convs = wm.encoder.module.net.convs
    # The official conv encoder: ShiftAug, PixelPreprocess, then conv/ReLU pairs (indices 2, 4, 6, 8).
    return [(f"{2 + j}.{name}", getattr(convs[j], name)) for j in (0, 2, 4, 6) for name in ("weight", "bias")]


def _reorder(w: torch.Tensor, segments: list[tuple[str, int]], src: list[str], dst: list[str]) -> torch.Tensor:
    """Columns of ``w`` from input order ``src`` to ``dst`` (names of ``segments``)."""
    sizes = dict(segments)
    parts = dict(zip(src, w.split([sizes[n] for n in src], dim=-1)))
    return torch.cat([parts[n] for n in dst], dim=-1)


def _ours(segments) -> list[str]:
    return [name for name, _ in segments]


# ----------------------------------------------------------------------------- reading official files
def read_official_state_dict(path) -> tuple[dict, str]:
    """The world-model state dict of an official MBDPO / TD-MPC2 checkpoint and its format (``mbdpo`` or
    ``tdmpc2``); one clear :class:`CheckpointError` for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"No file at {path}. Pass checkpoint=<the official code's .pt file> (agent.save writes <work_dir>/models/*.pt)."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        truncated = isinstance(err, (EOFError, zipfile.BadZipFile)) or any(
            s in str(err) for s in ("central directory", "failed reading", "unexpected EOF", "Ran out of input")
        )
        what = (
            "it is truncated (an interrupted download or copy?): copy it again"
            if truncated
            else "it is not a PyTorch checkpoint of plain tensors (torch.load(weights_only=True) refused it)"
        )
        raise CheckpointError(f"{path} could not be read ({type(err).__name__}: {str(err)[:200]}); {what}.") from err
    if isinstance(obj, Mapping) and "format_version" in obj and "payload" in obj:
        raise CheckpointError(
            f"{path} is already a torchrl_mbdpo checkpoint: use it directly (mbdpo-eval checkpoint={path}), "
            "or turn it into the official layout with mbdpo-export."
        )
    state = obj.get("model") if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(state, Mapping) or not any(str(k).startswith(("_encoder.", "_dynamics.")) for k in state):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path} is not an official MBDPO or TD-MPC2 checkpoint: expected {{'model': <world-model state dict>}} "
            f"with _encoder.*, _dynamics.*, _Qs.* entries (what agent.save writes), found {keys}."
        )
    state = {k: v for k, v in state.items() if not k.endswith(("__batch_size", "__device"))}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:5]} of the state dict are not tensors; not an official MBDPO or TD-MPC2 checkpoint.")
    fmt = "mbdpo" if any(k.startswith(("_F.", "_score.")) for k in state) else "tdmpc2"
    return dict(state), fmt


def _stacked_q(state: dict, path) -> tuple[dict, dict | None, str]:
    """The Q ensemble as ``(online, target)`` dicts of stacked tensors keyed ``<layer>.<name>``, and the layout."""

    def collect(prefix):
        return {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}

    online = collect("_Qs.params.")
    if online and all(k.isdigit() for k in online):  # functorch ParameterList (TD-MPC2 before Jan 2025)

        def rename(flat):
            out = {}
            for n in sorted(flat, key=int):
                layer, kind = divmod(int(n), 4)
                out[f"{layer}.{_PARAM_LIST_NAMES[kind]}"] = flat[n]
            return out

        target = collect("_target_Qs.params.")
        return rename(online), rename(target) if target else None, "parameter_list"
    if online:
        collect("_detach_Qs_params.")  # the same values as _Qs.params (shared data in the official model)
        target = collect("_target_Qs_params.")
        return online, target or None, "stacked"
    heads = collect("_Qs.")
    if heads and all(k.split(".", 1)[0].isdigit() for k in heads):  # one module per head

        def stack(per_head):
            n = 1 + max(int(k.split(".", 1)[0]) for k in per_head)
            names = {k.split(".", 1)[1] for k in per_head}
            missing = [f"{h}.{name}" for h in range(n) for name in names if f"{h}.{name}" not in per_head]
            if missing:
                raise CheckpointError(f"{path}: the per-head Q layout lacks {missing[:4]}; the shapes fit no architecture.")
            return {name: torch.stack([per_head[f"{h}.{name}"] for h in range(n)]) for name in names}

        target = collect("_target_Qs.")
        return stack(heads), stack(target) if target else None, "per_head"
    raise CheckpointError(f"{path} has no Q ensemble (_Qs.params.* or _Qs.<head>.*): not a complete MBDPO or TD-MPC2 world model.")


def _layers(state: dict, prefix: str) -> list[torch.Tensor]:
    """Weights ``<prefix>.<i>.weight`` for i = 0, 1, ... (as many as there are)."""
    out, i = [], 0
    while f"{prefix}.{i}.weight" in state:
        out.append(state[f"{prefix}.{i}.weight"])
        i += 1
    return out


def _no_architecture(path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: the tensor shapes fit no architecture this library builds ({why}). The file may come from a "
        "modified MBDPO/TD-MPC2; only the official world models (any model_size, single- or multi-task, "
        "state or rgb) can be imported."
    )


def infer_world_model_config(state: dict, q_online: dict, path="checkpoint") -> WorldModelConfig:
    """The :class:`WorldModelConfig` whose tensors have the shapes of an official state dict."""
    emb = state.get("_task_emb.weight")
    num_tasks, T = (emb.shape[0], emb.shape[1]) if emb is not None else (1, 0)
    pi = _layers(state, "_pi")
    dyn = _layers(state, "_dynamics")
    rew = _layers(state, "_reward")
    if len(pi) != 3 or len(dyn) != 3 or len(rew) != 3:
        raise _no_architecture(path, f"_pi, _dynamics and _reward need 3 layers each, found {len(pi)}, {len(dyn)}, {len(rew)}")
    L = pi[0].shape[1] - T
    A, rem = divmod(pi[-1].shape[0], 2)
    M = dyn[0].shape[0]
    if L <= 0 or rem or A <= 0 or dyn[0].shape[1] != L + A + T:
        raise _no_architecture(
            path,
            f"_pi.0.weight {tuple(pi[0].shape)}, _pi.2.weight {tuple(pi[-1].shape)} and _dynamics.0.weight "
            f"{tuple(dyn[0].shape)} are not (mlp, latent+task_dim), (2*action, mlp), (mlp, latent+action+task_dim) "
            f"for task_dim {T}",
        )
    if "0.weight" not in q_online or q_online["0.weight"].ndim != 3:
        raise _no_architecture(path, "the Q heads' first weight is not stacked (num_q, mlp, in)")
    arch = dict(latent_dim=L, mlp_dim=M, num_q=q_online["0.weight"].shape[0], num_bins=rew[-1].shape[0], num_tasks=num_tasks, task_dim=T)
    enc = _layers(state, "_encoder.state")
    if enc:
        if len(enc) < 2:
            raise _no_architecture(path, "the state encoder has fewer than 2 layers")
        arch.update(obs_dim=enc[0].shape[1] - T, enc_dim=enc[0].shape[0], num_enc_layers=len(enc), obs_type="state")
    elif "_encoder.rgb.2.weight" in state:
        if T:
            raise _no_architecture(path, "a multi-task pixel encoder")
        arch.update(obs_dim=state["_encoder.rgb.2.weight"].shape[1], obs_type="rgb")
    else:
        raise _no_architecture(path, "no _encoder.state.* or _encoder.rgb.* tensors")
    score = _layers(state, "_score")
    if score:
        H, rem = divmod(score[-1].shape[0], A)
        if rem or H <= 0 or len(score) != 3:
            raise _no_architecture(path, f"_score's output {score[-1].shape[0]} is not horizon x action ({A})")
        arch.update(horizon=H, time_embed_dim=score[0].shape[1] - L - T - H * A)
    if "log_std_min" in state and "log_std_dif" in state:
        lo = float(state["log_std_min"])
        arch.update(log_std_min=lo, log_std_max=lo + float(state["log_std_dif"]))
    arch["episodic"] = "_termination.0.weight" in state
    masks = state.get("_action_masks")
    if masks is not None and T:
        if masks.shape != (num_tasks, A):
            raise _no_architecture(path, f"_action_masks {tuple(masks.shape)} is not (tasks {num_tasks}, action {A})")
        arch["action_dims"] = [int(m.sum()) for m in masks]
    try:
        return WorldModelConfig(action_dim=A, **arch)
    except (TypeError, ValueError) as err:
        raise _no_architecture(path, str(err)) from err


def _fill_world_model(wm: MBDPOWorldModel, state: dict, q_online: dict, q_target: dict | None, fmt: str, path) -> list[str]:
    """Copy an official state dict (Q heads already stacked) into ``wm``; returns the notes (what started fresh)."""
    cfg, notes = wm.cfg, []
    consumed = {"log_std_min", "log_std_dif", "_action_masks"}

    def put(key, ours: torch.Tensor, value: torch.Tensor):
        if value.shape != ours.shape:
            raise _no_architecture(
                path,
                f"{key} has shape {tuple(value.shape)}, the architecture read from the other tensors "
                f"(obs {cfg.obs_dim}, action {cfg.action_dim}, latent {cfg.latent_dim}, mlp {cfg.mlp_dim}, "
                f"task_dim {cfg.task_dim}) needs {tuple(ours.shape)}",
            )
        with torch.no_grad():
            ours.copy_(value)

    def get(key):
        if key not in state:
            raise _no_architecture(path, f"{key} is missing")
        consumed.add(key)
        return state[key]

    specs = _module_specs(cfg, "mbdpo") + [_score_spec(cfg)]
    for prefix, attr, segments, official in specs:
        if not any(k.startswith(prefix + ".") for k in state) and attr in ("energy", "score_net"):
            what = "energy network F" if attr == "energy" else "score network"
            notes.append(
                f"the {what} starts fresh: {'TD-MPC2 has none' if fmt == 'tdmpc2' else 'the file has none'}"
                f"{' (F = 0 until trained: the planner adds no energy term)' if attr == 'energy' else ''}"
            )
            continue
        for suffix, ours in _mlp_tensors(getattr(wm, attr).module.net):
            value = get(f"{prefix}.{suffix}")
            if suffix == "0.weight":
                if value.ndim != 2 or value.shape[1] != sum(s for _, s in segments):
                    put(f"{prefix}.{suffix}", ours, value)  # raises the shape error
                value = _reorder(value, segments, official, _ours(segments))
            put(f"{prefix}.{suffix}", ours, value)
    if cfg.obs_type == "rgb":
        if cfg.latent_dim != 512:
            raise _no_architecture(path, f"a pixel encoder needs latent_dim 512, the model has {cfg.latent_dim}")
        for suffix, ours in _rgb_tensors(wm):
            put(f"_encoder.rgb.{suffix}", ours, get(f"_encoder.rgb.{suffix}"))
    if cfg.multitask:
        put("_task_emb.weight", wm.task_emb.weight, get("_task_emb.weight"))
    segments, official = _q_segments(cfg)
    if q_target is None:
        notes.append("the file has no target Q heads: they start as copies of the online heads")
        q_target = q_online
    for source, dest, name in ((q_online, wm.q_params, "_Qs.params"), (q_target, wm.target_q_params, "_target_Qs_params")):
        unknown = sorted(set(source) - {s for s, _ in _q_keys(wm)})
        if unknown:
            raise _no_architecture(path, f"unexpected Q tensors {name}.{unknown[:4]}")
        for suffix, key in _q_keys(wm):
            if suffix not in source:
                raise _no_architecture(path, f"{name}.{suffix} is missing")
            value = source[suffix]
            if suffix == "0.weight":
                if value.shape[-1] != sum(s for _, s in segments):
                    put(f"{name}.{suffix}", dest[key], value)
                value = _reorder(value, segments, official, _ours(segments))
            put(f"{name}.{suffix}", dest[key], value)
    unused = sorted(set(state) - consumed)
    if unused:
        raise _no_architecture(path, f"tensors no module of this architecture holds: {unused[:6]}")
    if "log_std_min" not in state:
        notes.append(
            f"the file has no log_std_min/log_std_dif buffers: the policy's log-std range is the default "
            f"[{cfg.log_std_min:g}, {cfg.log_std_max:g}]"
        )
    if fmt == "mbdpo":
        notes.append("energy normalisation statistics are not saved by the official code: they start at mean 0, std 1")
    return notes


# ----------------------------------------------------------------------------- run checkpoint around it
def _model_size_key(cfg: WorldModelConfig):
    arch = dict(enc_dim=cfg.enc_dim, mlp_dim=cfg.mlp_dim, latent_dim=cfg.latent_dim, num_enc_layers=cfg.num_enc_layers, num_q=cfg.num_q)
    for key, table in MODEL_SIZES.items():
        if table == arch:
            return key
    return min(MODEL_SIZES, key=lambda k: abs(MODEL_SIZES[k]["mlp_dim"] - cfg.mlp_dim))


def _single_task(task, cfg: WorldModelConfig, path, notes: list[str]):
    """The task of a single-task checkpoint (the official files do not record it) and its TaskSpec."""
    from ..envs import make_env, observation_size, task_spec

    def fits(name):
        dims = TASK_DIMS.get(name)
        return dims is not None and dims[1] == cfg.action_dim and (cfg.obs_type == "rgb" or dims[0] == cfg.obs_dim)

    if task is None:
        candidates = [name for name in TASK_DIMS if fits(name)]
        text = Path(path).name
        named = sorted((c for c in candidates if c in text), key=len, reverse=True)
        if len(candidates) == 1:
            task = candidates[0]
        elif named:
            task = named[0]
            notes.append(f"task {task} taken from the file name (pass task=<name> to choose another)")
        else:
            shown = ", ".join(candidates[:12]) or "none of the DMControl/MetaWorld tasks"
            raise CheckpointError(
                f"{path} does not record its task (observation {cfg.obs_dim}, action {cfg.action_dim}): pass task=<name>; "
                f"tasks of these sizes: {shown}."
            )
    spec = task_spec(task)
    if spec.name in TASK_DIMS:
        ok = fits(spec.name)
        sizes = TASK_DIMS[spec.name][:2]
    else:
        env = make_env(spec.name, obs=cfg.obs_type)
        sizes = (observation_size(env), env.action_spec.shape[-1])
        env.close()
        ok = sizes == (cfg.obs_dim, cfg.action_dim) or (cfg.obs_type == "rgb" and sizes[1] == cfg.action_dim)
    if not ok:
        raise CheckpointError(
            f"task={spec.name} has observation {sizes[0]} and action {sizes[1]}, but {path} was trained with observation "
            f"{cfg.obs_dim} and action {cfg.action_dim}: pass the task it was trained on."
        )
    return spec


def _multitask(tasks, exclude_tasks, cfg: WorldModelConfig, path, notes: list[str]) -> tuple[list[str], list[str], list[float]]:
    """Task names (embedding order), the trained ones, and one discount per task."""
    from ..envs import task_spec

    if tasks is None:
        set_name = _TASK_SET_OF_SIZE.get(cfg.num_tasks)
        if set_name is None or PADDED_DIMS[set_name] != (cfg.obs_dim, cfg.action_dim):
            raise CheckpointError(
                f"{path} is a multi-task model of {cfg.num_tasks} tasks (observation {cfg.obs_dim}, action {cfg.action_dim}), "
                f"not TD-MPC2's mt30 or mt80: pass tasks=[<the {cfg.num_tasks} task names, in the order of its training config>]."
            )
        names = list(TASK_SETS[set_name])
    else:
        names = list(tasks)
        if len(names) != cfg.num_tasks:
            raise CheckpointError(
                f"{path} has {cfg.num_tasks} task embeddings, tasks= lists {len(names)}: pass all of them, in training order."
            )
    for name in names:
        task_spec(name)  # unknown names: a ValueError with close matches
    excluded = list(exclude_tasks or [])
    unknown = sorted(set(excluded) - set(names))
    if unknown:
        raise CheckpointError(f"exclude_tasks {unknown} are not tasks of {path} ({task_set_of(names) or 'its task list'}).")
    lengths = [TASK_DIMS[n][2] if n in TASK_DIMS else task_spec(n).episode_length for n in names]
    if cfg.action_dims:
        known = {n: TASK_DIMS[n][1] for n in names if n in TASK_DIMS}
        differ = [n for i, n in enumerate(names) if n in known and known[n] != cfg.action_dims[i]]
        if differ:
            notes.append(
                f"the action masks of {len(differ)} task(s) ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}) differ from "
                "those tasks' action sizes: the checkpoint's masks are kept (pass tasks=[...] if its task order is another)"
            )
    else:
        cfg.action_dims = [TASK_DIMS[n][1] if n in TASK_DIMS else cfg.action_dim for n in names]
        notes.append("the file has no action masks: taken from the tasks' action sizes")
    return names, [n for n in names if n not in excluded], [tdmpc2_discount(n) for n in lengths]


def _train_config(cfg: WorldModelConfig, algo: str, task) -> TrainConfig:
    train = TrainConfig(
        task=task,
        algo=algo,
        model_size=_model_size_key(cfg),
        obs=cfg.obs_type,
        episodic=cfg.episodic,
        mode="offline" if cfg.multitask else "online",
        model=ModelOverrides(
            latent_dim=cfg.latent_dim,
            mlp_dim=cfg.mlp_dim,
            enc_dim=cfg.enc_dim,
            num_enc_layers=cfg.num_enc_layers,
            num_q=cfg.num_q,
            dropout=cfg.dropout,
            simnorm_dim=cfg.simnorm_dim,
            q_init=cfg.q_init,
            task_dim=cfg.task_dim if cfg.multitask else None,
        ),
    )
    train.planner.horizon = train.mppi.horizon = cfg.horizon
    return train


def _refuse_overwrite(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} exists; nothing was written. Pass another out=<path>, or overwrite=true to replace it.")


def import_checkpoint(
    path,
    out=None,
    *,
    task: str | None = None,
    tasks: list[str] | None = None,
    exclude_tasks: list[str] | None = None,
    algo: str | None = None,
    overwrite: bool = False,
) -> dict:
    """An official MBDPO or TD-MPC2 checkpoint as this library's run checkpoint (written to ``out`` if given).

    ``task``: the task of a single-task model (the files do not record it; default: the only task of its sizes,
    or one named in the file name). ``tasks``: a multi-task model's task names in embedding order (default:
    TD-MPC2's mt30/mt80 by the number of embeddings). ``exclude_tasks``: tasks of the set it was not trained on
    (fine-tuning targets). ``algo``: ``mbdpo`` or ``tdmpc2`` (default: the file's; a TD-MPC2 model imported
    with ``algo=mbdpo`` plans with MBDPO's sampler, its energy and score networks fresh). Returns the state
    (``load_agent(out)``'s), with ``state["imported"]["notes"]`` saying what started fresh."""
    out = Path(out) if out is not None else None
    if out is not None:
        _refuse_overwrite(out, overwrite)
    state, fmt = read_official_state_dict(path)
    algo = algo or fmt
    if algo not in ("mbdpo", "tdmpc2"):
        raise ValueError(f"algo must be mbdpo or tdmpc2, got {algo!r}")
    q_online, q_target, q_layout = _stacked_q(state, path)
    cfg = infer_world_model_config(state, q_online, path)
    cfg.q_init = "trunc_normal" if algo == "tdmpc2" else "official"
    notes: list[str] = []
    if cfg.multitask:
        names, trained, discounts = _multitask(tasks, exclude_tasks, cfg, path, notes)
        spec = None
    else:
        if tasks or exclude_tasks:
            raise CheckpointError(f"{path} is a single-task model: tasks=/exclude_tasks= apply to multi-task ones; pass task=<name>.")
        spec = _single_task(task, cfg, path, notes)
    wm = MBDPOWorldModel(cfg)
    notes = _fill_world_model(wm, state, q_online, q_target, fmt, path) + notes
    if cfg.multitask:
        set_name = task_set_of(names)
        run_task = set_name if set_name and TASK_SETS[set_name] == names else names
        run = {"mode": "offline", "task_names": names, "trained_tasks": trained, "discounts": discounts}
    else:
        run_task = spec.name
        run = {"task": {**dataclasses.asdict(spec), "discount": spec.discount}, "task_names": None, "discounts": None}
    train_cfg = _train_config(cfg, algo, run_task)
    result = {
        "config": to_container(train_cfg),
        "world_model_config": cfg.to_dict(),
        "step": 0,
        "world_model": wm.state_dict(),
        **run,
        "imported": {"source": str(path), "format": fmt, "q_layout": q_layout, "notes": notes},
    }
    if out is not None:
        save_checkpoint(result, out)
    return result


# ----------------------------------------------------------------------------- writing official files
def official_state_dict(world_model: MBDPOWorldModel, fmt: str = "mbdpo") -> "OrderedDict[str, torch.Tensor]":
    """``world_model``'s weights in the official code's ``model.state_dict()`` layout (``fmt``: ``mbdpo``, or
    ``tdmpc2``: without the energy and score networks)."""
    if fmt not in OFFICIAL_FORMATS:
        raise ValueError(f"format must be one of {OFFICIAL_FORMATS}, got {fmt!r}")
    cfg = world_model.cfg
    if cfg.obs_type == "rgb" and cfg.latent_dim != 512:
        raise CheckpointError(
            f"A pixel model with latent_dim {cfg.latent_dim} has a projection layer the official code lacks "
            "(its conv encoder needs latent_dim 512): it cannot be exported."
        )
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    if cfg.multitask:
        sd["_action_masks"] = world_model.action_masks.detach().clone()

    def as_buffer(x: float) -> torch.Tensor:
        return torch.tensor(int(x)) if float(x).is_integer() else torch.tensor(float(x))

    sd["log_std_min"] = as_buffer(cfg.log_std_min)
    sd["log_std_dif"] = as_buffer(cfg.log_std_max - cfg.log_std_min)
    if cfg.multitask:
        sd["_task_emb.weight"] = world_model.task_emb.weight.detach().clone()
    if cfg.obs_type == "rgb":
        for suffix, ours in _rgb_tensors(world_model):
            sd[f"_encoder.rgb.{suffix}"] = ours.detach().clone()

    def put_mlp(prefix, attr, segments, official):
        for suffix, ours in _mlp_tensors(getattr(world_model, attr).module.net):
            value = ours.detach().clone()
            if suffix == "0.weight":
                value = _reorder(value, segments, _ours(segments), official)
            sd[f"{prefix}.{suffix}"] = value

    for spec in _module_specs(cfg, fmt):
        put_mlp(*spec)
    segments, official = _q_segments(cfg)

    def put_q(name, params):
        for suffix, key in _q_keys(world_model):
            value = params[key].detach().clone()
            if suffix == "0.weight":
                value = _reorder(value, segments, _ours(segments), official)
            sd[f"{name}.{suffix}"] = value

    put_q("_Qs.params", world_model.q_params)
    if fmt == "mbdpo":
        put_mlp(*_score_spec(cfg))
    put_q("_detach_Qs_params", world_model.q_params)
    put_q("_target_Qs_params", world_model.target_q_params)
    return sd


def export_checkpoint(source, out, *, fmt: str = "mbdpo", overwrite: bool = False) -> Path:
    """Write a model of this library in the layout the official code's ``agent.load`` reads
    (``{"model": state_dict}``). ``source``: a checkpoint path, a run checkpoint dict or an
    :class:`MBDPOWorldModel`. ``fmt="tdmpc2"`` leaves out the energy and score networks (TD-MPC2's layout).
    The energy normalisation statistics are not part of the official layout."""
    out = Path(out)
    _refuse_overwrite(out, overwrite)
    if isinstance(source, MBDPOWorldModel):
        world_model = source
    else:
        state = load_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
        if not isinstance(state, Mapping) or "world_model_config" not in state or "world_model" not in state:
            raise CheckpointError(
                f"{source if isinstance(source, (str, os.PathLike)) else 'the state'} holds no world model "
                "(world_model, world_model_config): pass a checkpoint of mbdpo-train, mbdpo-finetune or mbdpo-import."
            )
        if state.get("policy_loader"):
            raise CheckpointError(
                f"A checkpoint of algo={state.get('algo')} (a policy without a planner) has no MBDPO/TD-MPC2 world model to export."
            )
        world_model = MBDPOWorldModel(WorldModelConfig.from_dict(state["world_model_config"]))
        world_model.load_state_dict(state["world_model"])
    sd = official_state_dict(world_model, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"model": sd}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

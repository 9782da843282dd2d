"""Held-out open-loop accuracy of the pixel world model, measured so that copying the frame cannot pass it.

A next-frame model can score a low pixel MSE by repeating its input: most of a Push-T frame is background that
never changes. Here the model imagines each held-out episode open loop from its first frame and the episode's
actions (as an imagined DMO rollout does), and at each horizon ``h`` (10 and 20 steps by default) three errors are
set against the same errors of the *copy* baseline (the first frame, repeated):

- ``changed_mse``: pixel MSE (pixels in [0, 1]) over the pixels that changed between the first and the ``h``-th
  real frame only: the copy baseline is wrong on all of them;
- ``agent_px`` and ``block_px``: the distance, in pixels of the frame, between the agent's (the block's) position
  decoded from the predicted frame and from the real one (:func:`decode_positions`, colour masks of the Push-T
  renderer; a frame where the object cannot be found counts as the frame's diagonal).

A model that carries a policy must beat the copy baseline on all three at the horizons a policy imagines. The state
world model (:mod:`~torchrl_mbdpo.dmo.state_model`) is measured the same way on states: ``changed_mse`` over the state
features that changed, ``agent_error`` and ``block_error`` the position errors in workspace units.
"""

from __future__ import annotations

import math

import torch

__all__ = ["HORIZONS", "decode_positions", "open_loop_metrics", "metric_lines"]

HORIZONS = (10, 20)


def decode_positions(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's and the block's positions in uint8 Push-T frames ``(..., 3, H, W)``: the centroids ``(..., 2)``
    (x right, y down, in pixels; pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``) of the renderer's royal-blue
    agent (blue well above red) and slate-grey T block (blue a little above red, darker than the walls); NaN where
    no pixel has the colour. On real frames they match the simulator state (``state * H / 512``) within a pixel."""
    px = frames.float()
    r, g, b = px[..., 0, :, :], px[..., 1, :, :], px[..., 2, :, :]
    agent = b - r > 100
    block = (b - r > 15) & (b - r < 80) & (r < 200) & (g < b)
    H, W = px.shape[-2:]
    ys = torch.arange(H, dtype=torch.float32).view(H, 1) + 0.5
    xs = torch.arange(W, dtype=torch.float32).view(1, W) + 0.5

    def centroid(mask: torch.Tensor) -> torch.Tensor:
        w = mask.float()
        n = w.sum((-1, -2))
        xy = torch.stack([(w * xs).sum((-1, -2)), (w * ys).sum((-1, -2))], -1) / n.clamp_min(1.0).unsqueeze(-1)
        return torch.where((n > 0).unsqueeze(-1), xy, torch.full_like(xy, math.nan))

    return centroid(agent), centroid(block)


def _position_error(predicted: torch.Tensor, real: torch.Tensor, diagonal: float) -> torch.Tensor:
    error = (predicted - real).norm(dim=-1)
    return torch.where(torch.isnan(error), torch.full_like(error, diagonal), error)


@torch.no_grad()
def open_loop_metrics(model, dataset, episodes, horizons=HORIZONS, *, seed: int = 0, max_episodes: int = 32) -> dict:
    """The errors of the module docstring for ``model`` (a :class:`~torchrl_mbdpo.dmo.diffusion.DiffusionWorldModel`
    or a :class:`~torchrl_mbdpo.dmo.state_model.StateDiffusionWorldModel`)
    and the copy baseline, averaged over the ``episodes`` of ``dataset`` (at most ``max_episodes``) long enough for
    the largest horizon: ``{"episodes": n, "h10": {"changed_mse": {"model": ..., "copy": ...}, "agent_px": {...},
    "block_px": {...}}, ...}`` (``episodes`` 0 and no horizon entry when no episode is long enough)."""
    horizons = sorted(int(h) for h in horizons)
    T = horizons[-1]
    chosen = [e for e in (int(e) for e in episodes) if len(dataset.episode(e)) > T][:max_episodes]
    result: dict = {"episodes": len(chosen), "horizons": horizons}
    if not chosen:
        return result
    eps = [dataset.episode(e) for e in chosen]
    key = model.obs_key
    real = torch.stack([ep[key][: T + 1] for ep in eps])  # (N, T+1, *obs_shape)
    actions = torch.stack([ep["action"][:T] for ep in eps]).float()
    k, A = model.cfg.context, model.cfg.action_dim
    context = real[:, :1].expand(-1, k, *real.shape[2:]).clone()
    with torch.random.fork_rng(devices=[]):
        imagined = model.imagine(context, torch.zeros(len(eps), k, A), actions, generator=torch.Generator().manual_seed(seed))
    predicted = torch.cat([real[:, :1], imagined], 1)
    errors = _frame_errors if key == "pixels" else _state_errors
    for h in horizons:
        result[f"h{h}"] = errors(predicted[:, h], real[:, h], real[:, 0])
    return result


def _frame_errors(predicted: torch.Tensor, target: torch.Tensor, first: torch.Tensor) -> dict:
    """The module docstring's errors of predicted frames ``(N, 3, H, W)`` and of the first frame, against ``target``."""
    diagonal = math.hypot(*target.shape[-2:])
    changed = (target.int() - first.int()).abs().amax(1) > 0  # (N, H, W)
    real_agent, real_block = decode_positions(target)
    entry = {}
    for name, guess in (("model", predicted), ("copy", first)):
        sq = ((guess.float() - target.float()) / 255).pow(2).mean(1)  # (N, H, W)
        entry.setdefault("changed_mse", {})[name] = float(sq[changed].mean()) if changed.any() else 0.0
        agent, block = decode_positions(guess)
        entry.setdefault("agent_px", {})[name] = float(_position_error(agent, real_agent, diagonal).mean())
        entry.setdefault("block_px", {})[name] = float(_position_error(block, real_block, diagonal).mean())
    return entry


def _state_errors(predicted: torch.Tensor, target: torch.Tensor, first: torch.Tensor) -> dict:
    """The state model's errors (states ``(N, 5)``): ``changed_mse`` over the features
    (:func:`~torchrl_mbdpo.dmo.state_model.state_features`) that changed since the first state, and the agent's and
    the block's position errors in workspace units (``agent_error``, ``block_error``; 512 units = the frame's width)."""
    from .state_model import state_features

    real_features = state_features(target)
    changed = (real_features - state_features(first)).abs() > 1e-6
    entry = {}
    for name, guess in (("model", predicted), ("copy", first)):
        sq = (state_features(guess) - real_features).pow(2)
        entry.setdefault("changed_mse", {})[name] = float(sq[changed].mean()) if changed.any() else 0.0
        entry.setdefault("agent_error", {})[name] = float((guess[:, :2] - target[:, :2]).norm(dim=-1).mean())
        entry.setdefault("block_error", {})[name] = float((guess[:, 2:4] - target[:, 2:4]).norm(dim=-1).mean())
    return entry


def metric_lines(metrics: dict) -> list[str]:
    """One readable line per horizon: each error, the model's against the copy baseline's."""
    lines = []
    for h in metrics.get("horizons", []):
        entry = metrics.get(f"h{h}")
        if entry is None:
            continue
        parts = [f"{name} {v['model']:.4g} (copy {v['copy']:.4g})" for name, v in entry.items()]
        beats = all(v["model"] < v["copy"] for v in entry.values())
        verdict = "beats" if beats else "does not beat"
        lines.append(f"open loop {h} steps, {metrics['episodes']} held-out episodes: {', '.join(parts)}: {verdict} copying")
    return lines

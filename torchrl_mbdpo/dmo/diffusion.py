"""DMO's global world model: a DIAMOND-style EDM diffusion model of the next frame given the last ``k`` frames
and actions (equations: :mod:`torchrl_mbdpo.dmo.functional`).

``p(o_{t+1} | o_{t-k+1..t}, a_{t-k+1..t})`` is sampled by denoising pure noise at ``sigma_max`` in ``num_steps``
Euler steps (3 by default, as DMO and DIAMOND). The network ``F_theta`` is a small U-Net: diffusers'
``UNet2DModel`` (residual blocks with GroupNorm, ``scale_shift`` conditioning of every block on an embedding,
no attention by default). Its input is the preconditioned noisy frame ``c_in x`` concatenated on the channel
axis with the ``k`` context frames (DIAMOND's frame conditioning); the embedding is the sum of the sinusoidal
embedding of ``c_noise`` and an MLP embedding of the ``k`` actions (passed as the U-Net's ``class_labels``
with ``class_embed_type="identity"``, the place diffusers gives extra conditioning vectors).

Why diffusers' U-Net rather than a hand-written one: it installs with the pinned torch (no other torch is
pulled), is maintained and tested by its authors, has exactly the pieces DIAMOND's U-Net uses (down/up
residual blocks, GroupNorm, adaptive scale-shift conditioning), and every size is a constructor argument, so
the CPU-sized model here and a GPU-sized one are the same code. It is imported on first use only.

:class:`DiffusionConfig` describes a model; its :meth:`~DiffusionConfig.architecture` fields must match to load
a checkpoint (:func:`check_architecture`), while the sampler's fields (``num_steps``, ``sigma_*``, ``rho``) may
change at any time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..config import UserError
from .functional import (
    edm_denoised,
    edm_scalings,
    edm_training_sigma,
    edm_training_target,
    euler_step,
    frames_to_unit,
    karras_sigmas,
    unit_to_frames,
)

__all__ = [
    "DIFFUSERS_HINT",
    "ARCHITECTURE_FIELDS",
    "EDMSettings",
    "DiffusionConfig",
    "NextObservationDiffusion",
    "DiffusionWorldModel",
    "ArchitectureError",
    "check_architecture",
]

DIFFUSERS_HINT = "pip install -c constraints.txt -e '.[pusht]'  (diffusers, for its UNet2DModel)"
ARCHITECTURE_FIELDS = (
    "image_size",
    "context",
    "action_dim",
    "channels",
    "layers_per_block",
    "attention",
    "norm_groups",
    "noise_embedding_scale",
)


class ArchitectureError(UserError):
    """A world model (e.g. a checkpoint's) of another architecture than the one asked for."""


@dataclass
class EDMSettings:
    """What the pixel and the state world models share: EDM's ``sigma_data`` and training noise
    ``ln sigma ~ N(p_mean, p_std^2)``, and the sampler: ``num_steps`` Euler steps from ``sigma_max`` down to
    ``sigma_min`` (then 0) on Karras' schedule with ``rho`` (DIAMOND's constants)."""

    sigma_data: float = 0.5
    p_mean: float = -0.4
    p_std: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    num_steps: int = 3

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class DiffusionConfig(EDMSettings):
    """A next-frame diffusion world model. Architecture: ``image_size`` (square frames), ``context`` (``k``
    frames and actions), ``action_dim``, the U-Net's ``channels`` per resolution (each level halves the
    resolution), ``layers_per_block``, ``attention`` (a self-attention layer in the middle block),
    ``norm_groups`` (GroupNorm groups, dividing every channel count), ``noise_embedding_scale`` (``c_noise`` is
    multiplied by it before the sinusoidal embedding, whose frequencies suit values of order 1000). EDM and the
    sampler: :class:`EDMSettings`."""

    image_size: int = 64
    context: int = 4
    action_dim: int = 2
    channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: bool = False
    norm_groups: int = 8
    noise_embedding_scale: float = 1000.0

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        problems = []
        if self.context < 1:
            problems.append(f"context must be >= 1 frame, got {self.context}")
        if self.action_dim < 1:
            problems.append(f"action_dim must be >= 1, got {self.action_dim}")
        if not self.channels or min(self.channels) < 1:
            problems.append(f"channels must be positive channel counts, got {list(self.channels)}")
        elif any(c % self.norm_groups for c in self.channels):
            problems.append(f"every channel count must be a multiple of norm_groups={self.norm_groups}, got {list(self.channels)}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size < 8 or self.image_size % factor:
            problems.append(
                f"image_size must be >= 8 and divisible by 2^(levels - 1) = {factor} ({len(self.channels)} U-Net levels), "
                f"got {self.image_size}"
            )
        if self.layers_per_block < 1:
            problems.append(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        if self.num_steps < 1:
            problems.append(f"num_steps (denoising steps) must be >= 1, got {self.num_steps}")
        if problems:
            raise ValueError("Invalid diffusion world model config: " + "; ".join(problems) + ".")

    def architecture(self) -> dict:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def check_architecture(saved: DiffusionConfig, requested: DiffusionConfig, where) -> None:
    """Raise :class:`ArchitectureError` listing every architecture field where ``saved`` (e.g. a checkpoint's,
    at ``where``) differs from ``requested``."""
    a, b = saved.architecture(), requested.architecture()
    diffs = [f"{k}: checkpoint has {a.get(k)!r}, requested {b.get(k)!r}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    if diffs:
        raise ArchitectureError(
            f"The world model checkpoint {where} has another architecture:\n  "
            + "\n  ".join(diffs)
            + "\nDrop the conflicting overrides (or pass the checkpoint's values), or train a new model in another "
            "work_dir."
        )


def _unet(cfg: DiffusionConfig) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError(f"The diffusion world model needs diffusers ({err}). Install it with: {DIFFUSERS_HINT}") from err
    levels = len(cfg.channels)
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=3 * (cfg.context + 1),
        out_channels=3,
        block_out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=cfg.norm_groups,
        class_embed_type="identity",
        resnet_time_scale_shift="scale_shift",
        add_attention=cfg.attention,
        attention_head_dim=min(8, cfg.channels[-1]),
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
    )


class NextObservationDiffusion(nn.Module):
    """What the pixel and the state world models share: EDM preconditioning, DIAMOND's training loss, the Euler sampler
    and open-loop imagination around a network ``F_theta`` (the subclass's :meth:`_raw`). Observations are
    ``obs_key`` entries (``"pixels"``: uint8 frames; ``"state"``: Push-T states); ``frames`` is the context of the last
    ``k`` of them ``(B, k, *obs_shape)``, ``actions`` ``(B, k, A)`` in [-1, 1], the last one ``a_t``.

    A subclass sets ``obs_key`` and ``obs_shape`` and maps between observations and the diffusion space:
    :meth:`_context` (the conditioning), :meth:`_encode` (a target observation -> ``x``) and :meth:`_decode` (``x`` ->
    an observation), each given the context; :meth:`policy_observation` is what a policy reads of the last frames."""

    obs_key = "pixels"

    @property
    def obs_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The shape of one sample in the diffusion space (default: the observation's)."""
        return self.obs_shape

    def _context(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, target: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _raw(self, x_in, c_noise, context, actions):
        raise NotImplementedError

    def policy_observation(self, frames: torch.Tensor) -> torch.Tensor:
        """What a policy reads of the last ``n`` observations ``(B, n, *obs_shape)``."""
        raise NotImplementedError

    def _check(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        c = self.cfg
        want_frames, want_actions = (c.context, *self.obs_shape), (c.context, c.action_dim)
        if tuple(frames.shape[1:]) != want_frames or tuple(actions.shape[1:]) != want_actions or frames.shape[0] != actions.shape[0]:
            raise ValueError(
                f"The world model takes context {'frames' if self.obs_key == 'pixels' else 'states'} "
                f"(B, {', '.join(map(str, want_frames))}) and actions "
                f"(B, {', '.join(map(str, want_actions))}), got {tuple(frames.shape)} and {tuple(actions.shape)}."
            )

    def _sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.reshape(-1, *(1,) * len(self.x_shape))

    def denoise(self, x_noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``D(x_noisy; sigma | context, actions)`` (EDM Eq. 7); ``context`` from :meth:`_context`, ``sigma`` ``(B,)``."""
        s = edm_scalings(self._sigma(sigma), self.cfg.sigma_data)
        raw = self._raw(s.c_in * x_noisy, s.c_noise, context, actions)
        return edm_denoised(raw, x_noisy, s)

    def loss(
        self, frames: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """DIAMOND Eq. 6: ``||F(c_in x_noisy, c_noise) - (x - c_skip x_noisy) / c_out||^2`` averaged over the
        observation's entries, per sample ``(B,)``, with ``sigma`` from EDM's log-normal and ``x_noisy = x + sigma eps``."""
        self._check(frames, actions)
        context = self._context(frames)
        x = self._encode(target, context)
        sigma = edm_training_sigma(x.shape[0], self.cfg.p_mean, self.cfg.p_std, generator=generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        x_noisy = x + self._sigma(sigma) * noise
        s = edm_scalings(self._sigma(sigma), self.cfg.sigma_data)
        raw = self._raw(s.c_in * x_noisy, s.c_noise, context, actions)
        return (raw - edm_training_target(x, x_noisy, s)).pow(2).flatten(1).mean(1)

    @torch.no_grad()
    def sample(
        self, frames: torch.Tensor, actions: torch.Tensor, *, num_steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A next observation ``(B, *obs_shape)``: Euler steps (EDM Algorithm 1, first order) on Karras' schedule
        from ``x ~ N(0, sigma_max^2)``, ``num_steps`` (default ``cfg.num_steps``) denoiser calls."""
        self._check(frames, actions)
        c = self.cfg
        context = self._context(frames)
        sigmas = karras_sigmas(num_steps or c.num_steps, c.sigma_min, c.sigma_max, c.rho, device=frames.device)
        shape = (frames.shape[0], *self.x_shape)
        x = torch.randn(shape, generator=generator).to(frames.device) * sigmas[0]
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            denoised = self.denoise(x, sigma.expand(shape[0]), context, actions)
            x = euler_step(x, denoised, sigma, sigma_next)
        return self._decode(x, context)

    @torch.no_grad()
    def imagine(
        self, frames: torch.Tensor, actions: torch.Tensor, future_actions: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Open-loop autoregressive rollout: from context ``frames``/``actions`` (the last action is replaced by
        each ``future_actions[:, t]``), the predicted observations ``o_{t+1}`` for ``t < T``: ``(B, T, *obs_shape)``.
        ``actions`` holds the ``k`` actions before the first future one."""
        out = []
        for t in range(future_actions.shape[1]):
            acts = torch.cat([actions[:, 1:], future_actions[:, t : t + 1]], dim=1)
            nxt = self.sample(frames, acts, generator=generator)
            out.append(nxt)
            frames = torch.cat([frames[:, 1:], nxt[:, None]], dim=1)
            actions = acts
        return torch.stack(out, 1)


class DiffusionWorldModel(NextObservationDiffusion):
    """``F_theta`` (the U-Net of the module docstring) and the EDM machinery around it. Frames are uint8
    ``(B, k, 3, H, W)`` (context) and ``(B, 3, H, W)`` (target); actions float ``(B, k, A)`` in [-1, 1], the last one ``a_t``."""

    obs_key = "pixels"

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = _unet(cfg)
        emb = 4 * cfg.channels[0]  # UNet2DModel's time embedding width
        self.action_embedding = nn.Sequential(nn.Linear(cfg.context * cfg.action_dim, emb), nn.SiLU(), nn.Linear(emb, emb))

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (3, self.cfg.image_size, self.cfg.image_size)

    def _context(self, frames):
        return frames_to_unit(frames)

    def _encode(self, target, context):
        return frames_to_unit(target)

    def _decode(self, x, context):
        return unit_to_frames(x)

    def policy_observation(self, frames: torch.Tensor) -> torch.Tensor:
        """The last ``n`` frames stacked on the channel axis: uint8 ``(B, 3 n, H, W)``."""
        return frames.flatten(1, 2)

    def _raw(self, x_in, c_noise, context, actions):
        inputs = torch.cat([x_in, context.flatten(1, 2)], dim=1)
        cond = self.action_embedding(actions.flatten(1))
        return self.unet(inputs, c_noise.reshape(-1) * self.cfg.noise_embedding_scale, class_labels=cond).sample

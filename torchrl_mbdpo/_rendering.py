"""MuJoCo's rendering backend, chosen where it is needed (a DMControl env is made, a console command starts) and
never on import: importing torchrl_mbdpo changes nothing in the process environment."""

from __future__ import annotations

import ctypes.util
import os
import sys

__all__ = ["default_mujoco_gl", "choose_mujoco_gl"]


def default_mujoco_gl() -> str:
    """This platform's backend: headless Linux renders through EGL, or OSMesa where libEGL is missing; macOS and
    Windows render through their windowing system (glfw)."""
    if sys.platform.startswith("linux"):
        return "egl" if ctypes.util.find_library("EGL") else "osmesa"
    return "glfw"


def choose_mujoco_gl() -> str:
    """Set ``MUJOCO_GL`` to :func:`default_mujoco_gl` unless it is set already (before MuJoCo or dm_control is
    imported: both read it then); returns the backend in use."""
    return os.environ.setdefault("MUJOCO_GL", default_mujoco_gl())

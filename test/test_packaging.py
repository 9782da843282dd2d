"""The package installs beside a user's own stack: ranges in its metadata, exact versions only in constraints.txt;
its version lives in one place; importing it changes nothing in the process."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
STACK = ("torch", "torchrl", "tensordict")


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in importlib.metadata.requires("torchrl_mbdpo") or []]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = Version(version.strip())
    return pins


def test_the_metadata_holds_ranges_that_admit_the_pinned_versions():
    requirements, pins = _requirements(), _pins()
    for name in STACK:
        assert not any(s.operator == "==" for s in requirements[name].specifier), f"{name} is pinned in the metadata"
        assert name in pins, f"{name} has no exact version in constraints.txt"
    for name, version in pins.items():
        if name in requirements:
            assert version in requirements[name].specifier, f"constraints.txt pins {name}=={version}, outside {requirements[name]}"


def test_the_metadata_admits_the_newest_releases_on_the_registry():
    requirements = _requirements()
    for name in STACK:
        out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name], capture_output=True, text=True, timeout=120)
        found = re.search(rf"^{name} \(([^)]+)\)", out.stdout, re.M)
        if out.returncode or not found:
            pytest.skip(f"the package registry did not answer for {name}: {out.stderr.strip()[-200:]}")
        newest = Version(found.group(1))
        assert newest in requirements[name].specifier, f"{name} {newest}, the newest on the registry, is outside {requirements[name]}"


def test_installing_beside_another_admitted_torch_keeps_that_torch(tmp_path):
    """pip's dry run, in an environment that holds torch 2.14.0 (admitted, not the pinned 2.13.0; a metadata-only
    distribution put first on the path): nothing but this package would be installed."""
    pinned = _pins()["torch"]
    other = Version("2.14.0")
    assert other != pinned and other in _requirements()["torch"].specifier
    info = tmp_path / f"torch-{other}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {other}\n")
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation", "--report", str(report), "-q", str(REPO)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode and "Could not find a version" in out.stderr + out.stdout:
        pytest.skip(f"the package registry did not answer: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    installed = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert installed == {"torchrl_mbdpo": importlib.metadata.version("torchrl_mbdpo")}, installed


def test_the_version_lives_in_the_package_metadata():
    import torchrl_mbdpo

    assert torchrl_mbdpo.__version__ == importlib.metadata.version("torchrl_mbdpo")
    assert f'version="{torchrl_mbdpo.__version__}"' in (REPO / "setup.py").read_text()
    assert f"## {torchrl_mbdpo.__version__}" in (REPO / "CHANGELOG.md").read_text()


def test_importing_the_package_changes_nothing_in_the_process():
    """After its dependencies are imported (their own import effects are theirs), importing torchrl_mbdpo and its
    subpackages leaves the environment variables, torch's threads and the warning filters as they were."""
    code = """
import os, sys, warnings, json
os.environ.pop("MUJOCO_GL", None)
import torch, torchrl, tensordict, gymnasium, hydra, omegaconf
state = lambda: (dict(os.environ), torch.get_num_threads(), len(warnings.filters))
before = state()
import torchrl_mbdpo, torchrl_mbdpo.envs, torchrl_mbdpo.modules, torchrl_mbdpo.objectives, torchrl_mbdpo.trainers.trainer
import torchrl_mbdpo.data, torchrl_mbdpo.dmo, torchrl_mbdpo.cli, torchrl_mbdpo.config
after = state()
print(json.dumps({"env": {k: v for k, v in after[0].items() if before[0].get(k) != v}, "threads": [before[1], after[1]],
                  "filters": [before[2], after[2]]}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    changed = json.loads(out.stdout.strip().splitlines()[-1])
    assert changed["env"] == {}, changed["env"]
    assert changed["threads"][0] == changed["threads"][1] and changed["filters"][0] == changed["filters"][1], changed

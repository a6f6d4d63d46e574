"""Finding trained runs and rebuilding their models, for the scripts that evaluate and compare them.

A run directory (``<log_dir>/<name>/version_N``) holds ``config.yaml``, ``checkpoints/`` and, once
finished, ``metrics.json``. Its config names settings that only one part's train module has; that
module's ``build_model(args)`` rebuilds the networks and the checkpoint supplies the weights.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from pathlib import Path

import torch
import yaml

# The train modules of the parts; one not written yet is skipped.
TRAIN_MODULES = ("part1_vae.train", "part1_vae.train_mixture", "part2_gan.train", "part2_gan.train_aae",
                 "part3_flows.train")


def finished_runs(log_dir: str | Path, name: str) -> list[Path]:
    """Run directories of ``name`` that have a metrics.json, oldest first."""
    runs = [run for run in Path(log_dir, name).glob("version_*") if (run / "metrics.json").is_file()]
    return sorted(runs, key=lambda run: int(run.name.split("_")[-1]))


def train_flags(module) -> dict:
    """A train module's settings and their defaults (bookkeeping flags left out)."""
    parser = module.build_parser()
    return {action.dest: action.default for action in parser._actions if action.dest not in ("help", "config", "resume")}


def find_train_module(config: dict, run_dir: Path):
    """The one train module whose flags include every setting in the run's config."""
    matches = []
    for name in TRAIN_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "build_model") and set(config) <= set(train_flags(module)):
            matches.append(module)
    if len(matches) != 1:
        found = ", ".join(m.__name__ for m in matches) or "none"
        raise SystemExit(f"error: {run_dir / 'config.yaml'} matches {len(matches)} part(s) ({found}); expected one")
    return matches[0]


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None):
    """(model with the checkpoint's weights in eval mode, its train module, the run's settings).

    The checkpoint defaults to the one the run's metrics.json names (the best by validation, or
    the last for runs without one), else ``last.ckpt``.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"error: {run_dir} is not a run directory: no config.yaml there")
    config = yaml.safe_load(config_path.read_text())
    module = find_train_module(config, run_dir)
    if checkpoint is None:
        metrics_path = run_dir / "metrics.json"
        named = json.loads(metrics_path.read_text()).get("checkpoint") if metrics_path.is_file() else None
        checkpoint = run_dir / "checkpoints" / (named or "last.ckpt")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"error: checkpoint {checkpoint} not found")
    args = argparse.Namespace(**{**train_flags(module), **config})
    model = module.build_model(args)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    return model.eval(), module, args

"""A training step of the MNIST flow with its conv weights channels-last (as the couplings keep them) against
the same flow with contiguous weights: the same weights, noise and batch both ways, interleaved rounds.

    OMP_NUM_THREADS=1 python scripts/flow_step_timing.py                       # the 8-bit task's flow
    python scripts/flow_step_timing.py --config configs/flow_mnist.yaml --rounds 10
    python scripts/flow_step_timing.py --num_channels 32       # other flags go to the flow command
"""
from __future__ import annotations

import shared  # first: the OpenMP settings it makes (GOMP_SPINCOUNT) hold from torch's start, as in every command

import copy
import time
from pathlib import Path

import torch

from part3_flows import train as flow_command
from shared.cli import OneLineArgumentParser, parse_args
from shared.process import run_script
from shared.runs import DescriptionAndDefaultsFormatter, positive_int

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "flow_mnist8bit.yaml"  # wherever it runs from


def contiguous_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every conv weight in the default (NCHW-contiguous) memory format."""
    other = copy.deepcopy(model)
    for module in other.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.data = module.weight.data.contiguous()
    return other


def main(argv=None) -> dict:
    parser = OneLineArgumentParser(prog="scripts/flow_step_timing.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the flow command's config")
    parser.add_argument("--rounds", type=positive_int, default=6, help="interleaved rounds")
    parser.add_argument("--steps", type=positive_int, default=5, help="training steps per way and round")
    args, flow_flags = parser.parse_known_args(argv)
    run_args = parse_args(flow_command.build_parser(), ["--config", args.config, *flow_flags], flow_command.check,
                          flow_command.default_name, flow_command.task_defaults)
    if run_args.task == "toy":
        parser.error("--task toy: this script times the image flow's training step; pass a config or --task of "
                     "an image task (mnist, mnist8bit)")
    torch.manual_seed(0)
    channels_last = flow_command.build_model(run_args)
    levels = channels_last.num_levels
    batch = torch.randint(0, levels, (run_args.batch_size, 1, 28, 28)).float() / (levels - 1)
    channels_last.init_from_data(batch)
    ways = {"channels_last": channels_last, "contiguous": contiguous_copy(channels_last)}
    optimizers = {name: torch.optim.Adam(model.parameters(), run_args.lr) for name, model in ways.items()}
    seconds = {name: [] for name in ways}
    losses = {}
    for _ in range(args.rounds):
        for name, model in ways.items():
            start = time.perf_counter()
            for step in range(args.steps):
                torch.manual_seed(step)  # the same dequantization noise both ways
                optimizers[name].zero_grad()
                loss = model.bpd(model.nll(batch)).mean()
                loss.backward()
                optimizers[name].step()
            losses[name] = loss.item()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    for name in ways:
        print(f"{name}: best {min(seconds[name]) * 1000:.0f} ms a step, last loss {losses[name]:.5f}")
    return {name: min(times) for name, times in seconds.items()} | {f"loss_{name}": losses[name] for name in ways}


if __name__ == "__main__":
    run_script(main)

"""The Trainer of a run, from the Lightning flags the commands pass through, and the one-line refusal of a setting
found bad after parsing: what Lightning refuses, restated, and what it would run otherwise than asked or never finish.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import LightningEnvironment
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_warn

from shared.cli import naming_the_file
from shared.lean_lightning import NullProfiler
from shared.process import cpu_lacks_bf16_arithmetic
from shared.progress import EpochBar, ForkedRandomModelSummary


def usage_error(args: argparse.Namespace, message: str) -> NoReturn:
    """A bad setting found after parsing: one line naming the --config file that set it, exit 2, as the parser's."""
    message = naming_the_file(message, getattr(args, "set_in_file", ()), args.config)
    print(f"{args.command}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def build_trainer(args: argparse.Namespace, logger, callbacks: list[pl.Callback], unused_networks: bool = False
                  ) -> pl.Trainer:
    """The Trainer, or a one-line usage error restating Lightning's refusal of the device flags. ``unused_networks``:
    the model's steps each leave a network unused (the GAN's, the AAE's), which plain DDP fails on."""
    on_cpu = args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and isinstance(args.devices, int) and args.devices > (os.cpu_count() or 1):
        usage_error(args, f"--devices {args.devices}: this machine has {os.cpu_count()} CPU cores, and more "
                          f"processes than cores only slow every one of them down")
    if on_cpu and str(args.precision) in ("16-mixed", "16"):  # Lightning would run bf16-mixed, config.yaml say 16
        usage_error(args, f"--precision {args.precision}: float16 mixed precision is a GPU's, a CPU has none; "
                          f"--precision bf16-mixed is the CPU's mixed precision")
    if on_cpu and str(args.precision).startswith("bf16") and cpu_lacks_bf16_arithmetic():
        rank_zero_warn(f"--precision {args.precision} on a CPU without bf16 instructions (no avx512_bf16 or "
                       f"amx_bf16 among its flags): bf16 is emulated there and likely slower than 32-true")
    show_bar = sys.stdout.isatty() if args.progress_bar is None else args.progress_bar
    callbacks = [*callbacks, ForkedRandomModelSummary(), *([EpochBar()] if show_bar else [])]
    try:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=args.devices,
                             num_nodes=args.num_nodes, strategy=args.strategy, precision=args.precision,
                             logger=logger, log_every_n_steps=args.log_every_n_steps, callbacks=callbacks,
                             enable_progress_bar=show_bar, enable_model_summary=True, profiler=NullProfiler(),
                             use_distributed_sampler=False)  # the data module splits the batches between processes
    except (MisconfigurationException, ValueError, RuntimeError, TypeError, ImportError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        usage_error(args, f"the Lightning Trainer refused --accelerator {args.accelerator} --devices {args.devices} "
                          f"--num_nodes {args.num_nodes} --strategy {args.strategy} --precision {args.precision}: "
                          f"{reason}")
    if trainer.precision not in ("32-true", "bf16-mixed", "16-mixed"):
        usage_error(args, f"--precision {args.precision}: the models train in 32-true or mixed precision (bf16-mixed; "
                          f"16-mixed on a GPU); {trainer.precision} casts the weights themselves, which they do not take")
    if (trainer.num_nodes > 1 and isinstance(getattr(trainer.strategy, "cluster_environment", None), LightningEnvironment)
            and not {"NODE_RANK", "MASTER_ADDR"} & set(os.environ)):  # its processes would wait for the others forever
        usage_error(args, f"--num_nodes {args.num_nodes}: no cluster to run on (no SLURM or torchrun job, no NODE_RANK "
                          f"and MASTER_ADDR set); start the command on every machine as README: Scaling out shows")
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        # Such a fit returns only the weights and the logged figures: this process's callbacks would record
        # no epochs, no fit time and no first loss in metrics.json and timing.json.
        usage_error(args, f"--strategy {args.strategy} fits in processes it spawns or forks, which do not return "
                          f"the run's record to this one; use --strategy ddp (the same DDP, started by re-running "
                          f"the command in each process)")
    if unused_networks and isinstance(trainer.strategy, DDPStrategy) and not trainer.strategy._ddp_kwargs.get(
            "find_unused_parameters"):  # as --devices 2 or auto on several GPUs with --strategy auto: a traceback
        usage_error(args, f"--devices {args.devices} --strategy {args.strategy}: Lightning runs plain DDP here, and each "
                          f"adversarial step leaves a network unused; use --strategy ddp_find_unused_parameters_true")
    _sigterm_without_collective(trainer)
    return trainer


def _sigterm_without_collective(trainer: pl.Trainer) -> None:
    """Lightning's SIGTERM handler, less the broadcast it runs inside the handler: a signal interrupts a process
    anywhere, and one process's broadcast met another's barrier (a checkpoint's) or a second SIGTERM's broadcast (a
    SIGTERM to all of a run's processes reaches all but rank zero twice: from the shell and from rank zero), and
    the run waited forever or died in a traceback. The loop still stops every process at once: at each batch's
    start it broadcasts whether rank zero received one."""
    connector = trainer._signal_connector

    def note_sigterm(signum, frame) -> None:
        if not connector.received_sigterm and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)  # rank zero passes it on to the processes it started
        connector.received_sigterm = True
    connector._sigterm_notifier_fn = note_sigterm

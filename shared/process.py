"""What every process that drives a Trainer does first, and what it tells a person: Lightning's known noise
dropped, the project's own warnings on one line, no NVML lookup a step where it is futile; the machine's name
and whether its CPU has bf16 arithmetic; a command or script ended by Ctrl-C in one line, not by its output's reader
going away; a distributed run's process group ended before the interpreter is."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import re
import signal
import sys
import warnings
from pathlib import Path

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)

# Lightning's lines that tell a user of these commands nothing (the device, the processes and the precision are in
# our start line).
_QUIET_INFO = ("No CUDA runtime is found",  # torch.compile on a machine without a GPU
               "GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "`Trainer.fit` stopped:",
               "Restoring states from", "Loaded model weights", "Restored all states", "LOCAL_RANK:",
               "Detected KeyboardInterrupt", "Received SIGTERM:",  # the command says what they did, and how to resume
               "Initializing distributed:", f"{'-' * 100}\ndistributed_backend=",  # a process line each, then a box
               "Using 16-bit Automatic Mixed Precision", "Using bfloat16 Automatic Mixed Precision",
               "Trainer already configured with model summary callbacks",  # the runs' summary replaces Lightning's
               "`Trainer(limit_train_batches=1)` was configured")  # the benchmark's own limit, where a way is one call
_QUIET_WARNINGS = (
    r".*LeafSpec.*",  # a deprecation inside Lightning itself
    r".*exists and is not empty.*",  # a resumed run writes into its own checkpoint folder
    r".*but have no `validation_step`.*",  # the GAN and AAE validate nothing; their data module has a val split
    r".*does not have many workers.*",  # batches are tensor slices: workers would only add overhead
    r".*GPU available but not used.*",  # --accelerator cpu is a choice
    r".*smaller than the logging interval.*",  # shared.callbacks.LossMonitor logs the step losses from the first
    r".*is not supported by the model summary.*",  # bf16: only its estimate of the model's megabytes is off
)


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not re.sub(r"^\[rank: \d+\] ", "", record.getMessage().lstrip()).startswith(_QUIET_INFO)


def silence_known_noise() -> None:
    """Drop, by their text, the Lightning messages listed above (every other message still shows), and print
    the project's own warnings on one line."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "lightning_fabric.utilities.distributed", "pytorch_lightning.trainer.connectors.signal_connector",
                 "torch.utils.cpp_extension"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise())
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if not getattr(warnings.formatwarning, "project_one_line", False):
        warnings.formatwarning = _one_line_for_project_files(warnings.formatwarning)


def skip_futile_nvml_check() -> None:
    """Drop Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` where the NVML library cannot be loaded (no NVIDIA driver).

    Lightning sets it on import so that asking whether CUDA is available never initialises CUDA (which spoils
    forked processes). Where NVML is missing, torch then tries to load it on every such question and falls back to
    asking CUDA anyway, and torch.optim asks once per optimizer step (Adam's graph-capture check): 40-90 us a step
    on the CPUs measured (reports/speed.md) for no change in any answer. Where the library loads, the variable stays.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # the name torch.cuda loads
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def prepare_lightning_process() -> None:
    """What every command that drives a Trainer does first: :func:`silence_known_noise` and
    :func:`skip_futile_nvml_check`, so runs, the benchmark and re-scoring see the same quiet, equally fast Lightning."""
    silence_known_noise()
    skip_futile_nvml_check()


def _one_line_for_project_files(format_warning):
    """``warnings.formatwarning`` that prints a warning raised by the project's code as one line, ``warning:
    <message>``, without the place and source line Python adds (always the ``rank_zero_warn(message)`` that raised
    it, which tells a user nothing); others as before."""
    def formatted(message, category, filename, lineno, line=None):
        if str(filename).startswith(_PROJECT_ROOT):
            return f"warning: {message}\n"
        return format_warning(message, category, filename, lineno, line)
    formatted.project_one_line = True
    return formatted


def is_first_process() -> bool:
    """Whether this process is a run's only one or its machine's first (local rank zero): who says a thing once
    before a Trainer, which knows the ranks, exists (the processes Lightning starts for DDP run the command again,
    with LOCAL_RANK set, as torchrun sets it; srun starts every process of a SLURM job with SLURM_LOCALID)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("SLURM_LOCALID", "0") == "0"


def machine_name(device=None) -> str:
    """The CPU's name and the threads torch uses, after the GPU's where one trains (``device`` a GPU, or none given
    and one there: the host's Python, which drives each step, weighs on a GPU's small steps): what timing.json and
    the benchmark record."""
    import torch  # here: the commands import this module before their flags are checked, torch after

    # Linux names the model in /proc/cpuinfo; platform.processor() is often empty.
    cpu = _cpuinfo_field("model name") or platform.processor() or platform.machine()
    host = f"{cpu}, {torch.get_num_threads()} CPU threads"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    return f"{torch.cuda.get_device_name(device)} (host: {host})" if device.type == "cuda" else host


def _cpuinfo_field(name: str) -> str | None:
    """The first processor's ``name`` line of /proc/cpuinfo (Linux), or None where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.split(":", 1)[0].strip() == name), None)


def cpu_lacks_bf16_arithmetic() -> bool:
    """True where the CPU's flags are known and name no bfloat16 instructions (avx512_bf16, amx_bf16): there
    bf16 is emulated, and a bf16-mixed run was 2.3x slower than float32 (README: Speed)."""
    flags = _cpuinfo_field("flags")
    return flags is not None and not {"avx512_bf16", "amx_bf16"} & set(flags.split())


class OutlivesItsReader:
    """A stream (stdout) that goes on writing when its reader has gone, as a pipe into ``head`` that has read its
    lines: Python raises BrokenPipeError at the next write, which stopped a training in mid-epoch. What follows is
    dropped; the run goes on and writes its records."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_what_follows()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_what_follows()

    def _drop_what_follows(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def run_script(main) -> None:
    """Run a script's ``main()``: Ctrl-C ends it with one line and the shell's status for it (130), no traceback; in
    a Lightning stage too, where Lightning takes the Ctrl-C, stops gracefully and exits with status 1. Ctrl-C again
    while it stops is ignored, as Lightning ignores it in its graceful stop (Ctrl-\\ or ``kill`` end it at once). A
    reader of its output that goes away (``| head``) does not end it."""
    if not isinstance(sys.stdout, OutlivesItsReader):
        sys.stdout = OutlivesItsReader(sys.stdout)
    ctrl_c_seen = []

    def on_ctrl_c(signum, frame):
        if ctrl_c_seen:  # the command is stopping: a second Ctrl-C would cut its last lines short with a traceback
            return
        ctrl_c_seen.append(True)
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not where the shell has Ctrl-C ignored
    if ours:
        signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as stop:
        if ctrl_c_seen and stop.code == 1:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise
    finally:
        if ours and not ctrl_c_seen:  # after a Ctrl-C it stays, ignoring another in the rest of the exit
            signal.signal(signal.SIGINT, signal.default_int_handler)
        end_distributed()


def end_distributed() -> None:
    """Destroy this process's process group, if a distributed run made one, while the interpreter is whole.

    Lightning destroys it at exit only for NCCL; a gloo group (DDP on CPUs) left to the interpreter's finalization can
    abort the process there ("terminate called without an active exception": pytorch issue 190489), which rank zero
    of a 2-process run stopped by a NaN did, rarely (exit status -6 instead of the command's 1)."""
    torch = sys.modules.get("torch")  # not imported (--help, a refused flag): no group, and no torch to load
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

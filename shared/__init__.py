"""What every part shares; see the README's Layout.

OpenMP threads that wait for work spin before they sleep. On a machine whose cores another job shares,
the spinning steals that job's time slices. Measured on this 2-core machine, 2 epochs of the default VAE
(2 threads): 6.0 s alone and 155 s beside another training with libgomp's default spin; with
GOMP_SPINCOUNT=2000, 6.3 s alone and 10.4 s beside it (passive waiting: 10.1 s alone, 9.3 s beside).
Every command imports this package before torch, so the default set here is in force before the
OpenMP runtime starts; a value the user set wins.
"""
import os
import signal

os.environ.setdefault("GOMP_SPINCOUNT", "2000")


def leave_ctrl_c_to_rank_zero() -> None:
    """In a process that Lightning's DDP launcher started for a local rank above 0 (it runs the command again with
    LOCAL_RANK set; torchrun, which sets it too, handles signals itself), ignore Ctrl-C: rank 0 takes it and ends
    the others. Interrupted while it was still importing, such a process died in a traceback, and Lightning's
    observer of the processes then killed rank 0 before it could remove the run directory it had just made."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and "TORCHELASTIC_RUN_ID" not in os.environ:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


leave_ctrl_c_to_rank_zero()  # first thing: the process imports for seconds before any command code runs

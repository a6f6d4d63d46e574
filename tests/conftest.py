import ast
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.autograd.functional import jacobian

from part1_vae.modules import VAE
from part1_vae.networks import MLPDecoder, MLPEncoder
from part3_flows.layers import ActNorm, AffineCoupling, InvertibleConv1x1
from shared.data import MNISTDataModule
from shared.judge import save_judge, train_judge

CONFIGS = Path(__file__).parents[1] / "configs"  # the shipped configs, wherever pytest runs from

# Flags that make a training run take seconds: a few hundred images, 2 epochs, cheap test-time bound.
TINY_RUN = ["--subset", "256", "--batch_size", "64", "--epochs", "2", "--iw_samples", "5",
            "--sample_epochs", "0", "--accelerator", "cpu", "--devices", "1"]

# The flow command's on tiny data: two epochs of 64-image batches (the toy task's data are points, not images).
TINY_FLOW_RUN = ["--batch_size", "64", "--epochs", "2", "--sample_epochs", "0", "--accelerator", "cpu", "--devices", "1"]

# The commands refuse more CPU processes than cores, so DDP on the CPU with two processes needs two.
needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="DDP with two CPU processes needs two cores")


@pytest.fixture(scope="session")
def full_mnist():
    """The bundled data set, decoded once for the whole session."""
    datamodule = MNISTDataModule()
    datamodule.setup()
    return datamodule


@pytest.fixture
def tiny_datamodule():
    datamodule = MNISTDataModule(batch_size=32, subset=128)
    datamodule.setup()
    return datamodule


# A judge trained in about a second: 8,192 images, one epoch, narrow layers (about 90% test accuracy).
TINY_JUDGE = dict(subset=8192, epochs=1, batch_size=64, lr=1e-2, num_filters=8, feature_dim=32)


@pytest.fixture(scope="session")
def tiny_judge():
    return train_judge(**TINY_JUDGE)


@pytest.fixture(scope="session")
def tiny_judge_path(tiny_judge, tmp_path_factory):
    return save_judge(*tiny_judge, tmp_path_factory.mktemp("judge") / "judge.ckpt")


def heavy_imports_of(code: str) -> tuple[list[str], subprocess.CompletedProcess]:
    """(which of torch and Lightning python ``code``, run from the project's root in a fresh interpreter, imported;
    the finished process): what a command's --help and refusals must not spend seconds on."""
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint(sorted(name for name in ('torch', "
                           f"'pytorch_lightning') if name in sys.modules))"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])
    return (ast.literal_eval(done.stdout.splitlines()[-1]) if done.stdout else ["(no output)"]), done


def load_script(name: str):
    """Import ``scripts/<name>.py`` (scripts are commands, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def turns_nan_after(function, good_calls: int):
    """``function`` wrapped to return NaN from call ``good_calls + 1`` on: a loss that goes bad mid-run."""
    calls = {"n": 0}

    def wrapped(*args):
        calls["n"] += 1
        value = function(*args)
        return value * float("nan") if calls["n"] > good_calls else value
    return wrapped


def stopped_by_nan(run, run_dir: Path) -> tuple[str, dict]:
    """``run()`` trains until its loss turns NaN: it must stop with a message naming the last good checkpoint,
    whose weights are all finite. Returns the message and that checkpoint."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    message = str(exit_info.value.code)
    assert "last good checkpoint" in message
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    return message, last


def crashes_in_epoch_two(train_batch):
    """``train_batch`` wrapped to raise at the third batch of the second epoch: a run killed mid-epoch."""
    return crashes_in(train_batch, epoch=2, batch=3)


def crashes_in(train_batch, epoch: int, batch: int | None = None):
    """``train_batch`` wrapped to raise at a batch (counted from 1; none: the first) of an epoch (from 1), however many
    batches a call of training_step trains on."""
    trained: dict[tuple[int, int], int] = {}  # batches begun, per module and epoch

    def wrapped(self, batch_):
        key = (id(self), self.current_epoch)
        trained[key] = trained.get(key, 0) + 1
        if self.current_epoch + 1 == epoch and trained[key] >= (batch or 1):
            raise RuntimeError("simulated crash")
        return train_batch(self, batch_)
    return wrapped


def fails_with_one_line(call, capsys, status: int, message: str) -> str:
    """Exit ``status`` (2: usage, 1: runtime) with one line containing ``message``, on stderr for usage
    errors and as the exit message (which Python prints to stderr) for runtime ones; returns what went to stdout."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    code, printed = exit_info.value.code, capsys.readouterr()
    line = printed.err if status == 2 else str(code)
    assert (code == 2) if status == 2 else (isinstance(code, str) and code.startswith("error: "))
    assert message in line and line.strip().count("\n") == 0, line
    return printed.out


def assert_fails_fast(run, tmp_path, capsys, message: str) -> None:
    """``run()`` must exit with status 2 and one line containing ``message``, before writing anything."""
    fails_with_one_line(run, capsys, 2, message)
    assert not any(tmp_path.iterdir()), "no work may happen before the flags are validated"


def changed_by_each_optimizer_step(module, dataloader) -> list[set[str]]:
    """Train ``module`` (manual optimization) on one batch; for each optimizer step in order, the names
    of the parameters it changed."""
    def snapshot():
        return {name: p.detach().clone() for name, p in module.named_parameters()}

    snapshots = [snapshot()]
    original_configure = module.configure_optimizers

    def configure_with_hooks():
        optimizers = original_configure()
        for optimizer in optimizers:
            optimizer.register_step_post_hook(lambda *_: snapshots.append(snapshot()))
        return optimizers

    module.configure_optimizers = configure_with_hooks
    # Lightning counts every optimizer step of a manual-optimization batch as a step.
    pl.Trainer(max_steps=len(original_configure()), limit_train_batches=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(module, dataloader)
    return [{name for name in before if not torch.equal(before[name], after[name])}
            for before, after in zip(snapshots[:-1], snapshots[1:])]


def small_vae(z_dim=4):
    torch.manual_seed(0)
    return VAE(MLPEncoder(784, [64], z_dim), MLPDecoder(z_dim, [64]), z_dim=z_dim, iw_chunk=32)


def randomise(flow: nn.Module, seed: int = 0) -> nn.Module:
    """Replace the zero-initialised last layers (and identity actnorms) by random values, so that the
    layers under test do something non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in flow.modules():
            if isinstance(module, AffineCoupling):
                for param in (module.net[-1].weight, module.net[-1].bias):
                    param.copy_(0.3 * torch.randn(param.shape, generator=generator))
                module.scale.copy_(0.5 + torch.rand(module.scale.shape, generator=generator))
            if isinstance(module, ActNorm):
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
                module.log_scale.copy_(0.3 * torch.randn(module.log_scale.shape, generator=generator))
            if isinstance(module, InvertibleConv1x1):  # rows rescaled: a log-det off 0, still well-conditioned
                module.weight.mul_(torch.exp(0.3 * torch.randn(len(module.weight), 1, generator=generator)))
    return flow


def assert_log_det_is_exact(transform, points: torch.Tensor):
    """log_det from the flow equals log|det J| of the map, J by autograd, point by point (float64)."""
    for point in points:
        flat = point.reshape(-1)
        jac = jacobian(lambda v: transform(v.view(1, *point.shape))[0].reshape(-1), flat)
        sign, log_abs_det = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(transform(point.unsqueeze(0))[1][0], log_abs_det, atol=1e-8, rtol=1e-8)


def parse_flow_args(argv):
    from part3_flows.train import build_parser, check, default_name, task_defaults
    from shared.cli import parse_args

    return vars(parse_args(build_parser(), argv, check, default_name, task_defaults))


def run_command(module: str, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m module flags`` as a user starts it, in a session of its own, so that a run that hangs is killed
    whole: the second process of a DDP run is the command's child, which a plain timeout would leave running."""
    with subprocess.Popen([sys.executable, "-m", module, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as started:
        try:
            out, err = started.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(started.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(started.args, started.returncode, out, err)


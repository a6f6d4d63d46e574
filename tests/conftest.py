import importlib.util
import sys
from pathlib import Path

import pytest

from shared.data import BinarizedMNISTDataModule
from shared.judge import save_judge, train_judge

# Flags that make a training run take seconds: a few hundred images, 2 epochs, cheap test-time bound.
TINY_RUN = ["--subset", "256", "--batch_size", "64", "--epochs", "2", "--iw_samples", "5",
            "--sample_epochs", "0", "--accelerator", "cpu", "--devices", "1"]


@pytest.fixture(scope="session")
def full_mnist():
    """The bundled data set, decoded once for the whole session."""
    datamodule = BinarizedMNISTDataModule()
    datamodule.setup()
    return datamodule


@pytest.fixture
def tiny_datamodule():
    datamodule = BinarizedMNISTDataModule(batch_size=32, subset=128)
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


def load_script(name: str):
    """Import ``scripts/<name>.py`` (scripts are commands, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def assert_fails_fast(run, tmp_path, capsys, message: str) -> None:
    """``run()`` must exit with status 2 and one line containing ``message``, before writing anything."""
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir()), "no work may happen before the flags are validated"

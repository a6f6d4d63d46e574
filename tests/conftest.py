import pytest

from shared.data import BinarizedMNISTDataModule

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

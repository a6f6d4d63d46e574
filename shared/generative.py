"""What every generative model of the project promises, so that evaluation, comparison and reports ask
the model instead of guessing from its class or its run's flags.

A model (in practice a LightningModule) subclasses :class:`GenerativeModel` and declares:

- ``data``: the kind of MNIST it models, a key of :data:`DATA_KINDS`; its samples are compared with
  that kind, and a likelihood is of it. Binary data are binarized one of two ways, which the model does not
  know: the run's ``binarization`` setting says which (threshold, or dynamic), and scripts/evaluate.py and
  scripts/compare.py read it there;
- ``image_shape``: the shape of one image, whose product is the number of dimensions behind every
  bits-per-dimension figure;
- ``sample(n)``: ``n`` images ``[n, *image_shape]``, float, in [0, 1], on the model's device, in whatever
  mode the model is (a model with batch norm or dropout samples in eval mode: :func:`evaluating`);
- ``likelihood_kind``: ``None`` for a model without a likelihood (GAN, adversarial autoencoder),
  else what ``log_likelihood`` returns: ``"exact"`` or the name of the bound;
- ``log_likelihood(images)``: log P(x) of the discrete images, in nats per image ``[B]`` (exact, or
  the named lower bound), for images as the DataModule serves that data variant;
- ``likelihood_metric``: the metrics.json key of that figure on the test set, in bits per dimension.
- ``keeps_weight_average``: true for a model that samples (and evaluates) with a moving average of its
  weights (``--ema_decay``); setting ``sample_from_average = False`` on it uses the trained weights instead.

The smallest complete model is in ``tests/test_generative.py`` and in the README ("Adding a model").
"""
from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from contextlib import contextmanager

import torch
from torch import nn

from shared.densities import nll_to_bpd

# The data variants, and how their images arrive from shared.data.MNISTDataModule (before any
# value_range mapping): each is also the MNIST reference that samples of such a model are scored against.
DATA_KINDS = {
    "binary": "binarized MNIST, by threshold (pixels > 0.5 become 1) or dynamically: pixels in {0, 1}",
    "grey": "grey-scale MNIST as continuous values: pixels k / 255 in [0, 1]",
    "8bit": "8-bit MNIST, the 256 grey levels as discrete values: pixels k / 255",
}


class GenerativeModel(ABC):
    """The contract; see the module docstring. Mix it in before ``pl.LightningModule``."""

    data: str = "binary"
    image_shape: tuple[int, ...] = (1, 28, 28)
    likelihood_kind: str | None = None
    likelihood_metric: str | None = None
    keeps_weight_average: bool = False

    @abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """``n`` images ``[n, *image_shape]`` in [0, 1]; ``n`` read through :func:`sample_count`."""

    def log_likelihood(self, images: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """log P(images) in nats per image, exact or the bound named by ``likelihood_kind``.

        ``num_samples``: Monte-Carlo samples per image for a bound (default: the model's test setting);
        an exact likelihood ignores it.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no likelihood")

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def bpd(self, nll: torch.Tensor) -> torch.Tensor:
        """Nats per image (a negative log-likelihood or a bound on one) to bits per dimension."""
        return nll_to_bpd(nll, self.num_dims)


def sample_count(n, z: torch.Tensor | None = None) -> int:
    """``n`` as the number of images a ``sample(n)`` draws: a whole number of at least 1, else a ValueError saying so
    (0 and -1 met torch's errors, which differed from model to model); with latents ``z`` given, their number."""
    try:
        count = operator.index(n) if not isinstance(n, bool) else None  # True is no count of images
    except TypeError:
        count = None
    if count is None:
        raise ValueError(f"sample(n): n must be a whole number of images, got {n!r}")
    if count < 1:
        raise ValueError(f"sample(n): n must be at least 1, got {count}")
    if z is not None and len(z) != count:  # z's rows were drawn whatever n said
        raise ValueError(f"sample(n, z): n is {count} but z holds {len(z)} latents")
    return count


def check_contract(model) -> None:
    """What a run records and the scripts read of a model after its training, checked before it trains (a missing
    ``training_loss`` or ``logged_images`` stopped a run after its fit, a mistyped ``data`` was never caught): a
    TypeError naming what the model must declare (README: Adding a model)."""
    name = type(model).__name__
    if not isinstance(getattr(model, "training_loss", None), str):
        raise TypeError(f"{name} must declare training_loss: what the loss its training_step returns is, in words")
    if not callable(getattr(model, "logged_images", None)):
        raise TypeError(f"{name} must define logged_images(): the image grids logged to TensorBoard and PNG")
    if not isinstance(model, GenerativeModel):  # a model of other data (the flow's 2-D toy task) promises no more
        return
    if model.data not in DATA_KINDS:
        raise TypeError(f"{name}.data must be one of {', '.join(DATA_KINDS)}, got {model.data!r}")
    has_likelihood = type(model).log_likelihood is not GenerativeModel.log_likelihood
    if has_likelihood != (model.likelihood_kind is not None) or (has_likelihood and not model.likelihood_metric):
        raise TypeError(f"{name}: a model that defines log_likelihood declares likelihood_kind and likelihood_metric "
                        f"(the metrics.json key of its test figure), one without declares neither")


def check_data_kind(data: str) -> str:
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {', '.join(DATA_KINDS)}, got {data!r}")
    return data


@contextmanager
def evaluating(network: nn.Module):
    """``network`` in eval mode (dropout off, batch norm using its running statistics and leaving them as they are),
    each of its modules back in its own mode after: a model samples so whether it is training or not (in training
    mode a sample would move the running statistics, and a sample of one image would fail)."""
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        yield network
    finally:
        for module, training in modes:
            module.training = training

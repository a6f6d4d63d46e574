import math

import pytest
import torch
from scipy.stats import norm

from part1_vae.networks import MLPDecoder
from shared.densities import bernoulli_nll
from shared.densities import elbo_to_bpd, nll_to_bpd
from shared.utils import interpolate_latents, make_grid, save_grid, visualize_manifold


def test_bpd_of_an_all_half_bernoulli_image_is_one():
    imgs = torch.bernoulli(torch.full((4, 1, 28, 28), 0.5))
    nll = bernoulli_nll(torch.zeros_like(imgs), imgs)  # logit 0 == probability 0.5
    assert torch.allclose(elbo_to_bpd(nll, imgs.shape), torch.ones(4), atol=1e-6)


def test_bpd_counts_all_non_batch_dimensions():
    assert elbo_to_bpd(torch.tensor(3 * 8 * 8 * math.log(2)), (5, 3, 8, 8)).item() == pytest.approx(1.0)


class RecordingDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z):
        self.z = z
        return torch.zeros(len(z), 1, 28, 28) + z[:, :1, None, None]


def test_manifold_latents_sit_at_normal_quantiles():
    decoder = RecordingDecoder()
    visualize_manifold(decoder, grid_size=5)
    expected = torch.tensor(norm.ppf([0.5 / 6, 1.75 / 6, 3 / 6, 4.25 / 6, 5.5 / 6]), dtype=torch.float32)
    assert torch.allclose(decoder.z[:5, 0], expected) and torch.allclose(decoder.z[::5, 1], expected)
    assert torch.allclose(decoder.z.mean(0), torch.zeros(2), atol=1e-6)  # symmetric around the prior's mean


def test_a_manifold_of_one_cell_sits_at_the_prior_mean():
    decoder = RecordingDecoder()
    visualize_manifold(decoder, grid_size=1)
    assert torch.equal(decoder.z, torch.zeros(1, 2))


def test_manifold_grid_shape_and_range():
    grid = visualize_manifold(MLPDecoder(z_dim=2), grid_size=20)
    assert grid.shape == (3, 20 * 30 + 2, 20 * 30 + 2)  # 28 px + 2 px padding per cell
    assert grid.min() >= 0 and grid.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_interpolation_keeps_the_latents_dtype(dtype):
    path = interpolate_latents(torch.zeros(2, 3, dtype=dtype), torch.ones(2, 3, dtype=dtype), steps=2)
    assert path.dtype == dtype and torch.allclose(path[0, :, 0].double(), torch.tensor([0, 1 / 3, 2 / 3, 1.0], dtype=torch.float64), atol=0.01)


def test_interpolation_includes_endpoints_and_is_linear():
    start, end = torch.randn(4, 8), torch.randn(4, 8)
    path = interpolate_latents(start, end, steps=5)
    assert path.shape == (4, 7, 8)
    assert torch.equal(path[:, 0], start) and torch.allclose(path[:, -1], end)
    assert torch.allclose(path[:, 1] - path[:, 0], (end - start) / 6, atol=1e-6)


def test_epoch_means_average_per_image_skip_unseen_names_and_reset():
    from shared.metrics import EpochMeans

    means = EpochMeans(("train", "test"), ["loss", "extra"])
    means.add("train", {"loss": torch.tensor([1.0, 2.0, 3.0])})  # per-image values
    means.add("train", {"loss": torch.tensor(7.0)}, count=3)  # the mean of a batch of 3 images
    assert means.compute_and_reset("train")["train_loss"].item() == pytest.approx((1 + 2 + 3 + 3 * 7) / 6)
    assert means.compute_and_reset("train") == {} and means.compute_and_reset("test") == {}



def test_epoch_means_keep_each_figure_apart_in_any_order_and_own_mean_before_the_epoch_ends():
    from shared.metrics import EpochMeans

    means = EpochMeans(("train",), ["loss", "extra", "more"])
    assert means.mean("train", "loss") is None
    means.add("train", {"more": torch.tensor([5.0, 7.0]), "loss": torch.tensor([1.0, 3.0])})
    means.add("train", {"loss": torch.tensor(4.0), "extra": torch.tensor(2.0)}, count=2)
    assert means.mean("train", "loss", all_processes=False).item() == pytest.approx((1 + 3 + 2 * 4) / 4)
    assert {key: value.item() for key, value in means.compute_and_reset("train").items()} == {
        "train_loss": 3.0, "train_extra": 2.0, "train_more": 6.0}
    means.add("train", {"loss": torch.full((300,), 1.01, dtype=torch.bfloat16)})  # as a bf16-mixed run may give them
    assert means.compute_and_reset("train")["train_loss"].item() == pytest.approx(1.0078125)  # 1.01 in bf16, exact sum


def test_adding_a_batch_of_figures_costs_a_few_tensor_ops_however_many_figures():
    """Every op is a dispatch of a few microseconds on the CPU, and these run every training step: a running mean of
    its own for each figure took four ops a figure (24 for the GAN's six)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from shared.metrics import EpochMeans

    class CountOps(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountOps.ops += 1
            return func(*args, **(kwargs or {}))
    names = ["g_loss", "d_loss", "d_acc_real", "d_acc_fake", "d_real", "d_fake"]
    means = EpochMeans(("train",), names)
    figures = {name: torch.rand((), requires_grad=True) * 2 for name in names}
    means.add("train", figures, count=64)  # the first add places the figures' positions on the device
    with CountOps():
        means.add("train", figures, count=64)
    assert CountOps.ops <= len(names) + 3  # a detach each (views), the stack, the scaling, the add


@pytest.mark.parametrize("call, message", [
    (lambda: make_grid(torch.rand(0, 1, 28, 28)), "B >= 1; got shape (0, 1, 28, 28)"),
    (lambda: make_grid(torch.rand(4, 784)), "[B, C, H, W], B >= 1; got shape (4, 784)"),
    (lambda: make_grid(torch.rand(4, 1, 28, 28), nrow=0), "nrow must be at least 1, got 0"),
    (lambda: save_grid(torch.rand(3, 8, 8), "grid"), "grid has no suffix to tell the image format by; e.g. grid.png"),
    (lambda: visualize_manifold(MLPDecoder(2, [8], [1, 28, 28]), grid_size=0), "grid_size must be at least 1, got 0"),
    (lambda: visualize_manifold(MLPDecoder(20, [8], [1, 28, 28])), "the decoder must take z of size 2"),
    (lambda: interpolate_latents(torch.zeros(2, 3), torch.ones(2, 3), -1), "steps (images between the ends) must be"),
    (lambda: nll_to_bpd(torch.ones(2), 0), "num_dims must be at least 1, got 0"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_the_picture_and_bpd_helpers_refuse_what_they_cannot_draw_or_count_in_words(call, message):
    with pytest.raises(ValueError) as refused:
        call()
    assert message in str(refused.value)


def decay_rates(first_epochs: int, then_epochs: int, stop: int, *later: tuple[int, int]) -> list[float]:
    """The rates of each epoch of a run planned for ``first_epochs`` that stops after ``stop`` and is resumed, its
    optimizer and then its schedule loaded as Lightning restores them, for ``then_epochs``; ``later``: more such
    (stop, epochs) resumes."""
    from shared.schedules import DecayToFinal

    weight, rates = torch.nn.Parameter(torch.zeros(1)), []
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    schedule = DecayToFinal(optimizer, 1e-4, first_epochs)
    resumes = dict([(stop, then_epochs), *later])
    for epoch in range(resumes[max(resumes)]):  # to the epochs the last resume asks for
        if epoch in resumes:
            saved = optimizer.state_dict(), schedule.state_dict()
            optimizer = torch.optim.Adam([weight], lr=1e-3)
            schedule = DecayToFinal(optimizer, 1e-4, resumes[epoch])
            optimizer.load_state_dict(saved[0])
            schedule.load_state_dict(saved[1])
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_a_resumed_decay_reaches_lr_final_at_the_last_epoch_of_the_epochs_asked_for_last():
    straight = decay_rates(4, 4, stop=4)
    assert straight == pytest.approx([1e-3 * 10 ** (-k / 3) for k in range(4)])
    assert decay_rates(4, 4, stop=2) == straight  # the same epochs: exactly the run without the interrupt
    resumed = decay_rates(8, 4, stop=2)  # planned for 8 epochs, stopped after 2, resumed for 4 in all
    assert resumed[:2] == decay_rates(8, 8, stop=8)[:2] and resumed[3] == pytest.approx(1e-4)
    assert resumed[1] > resumed[2] > resumed[3]
    assert decay_rates(10, 4, stop=3)[3] == pytest.approx(1e-4)  # one epoch to go: at lr_final, not 4.6 times it
    # Re-planned once, then interrupted and resumed to the same epochs: exactly as without the second interrupt
    assert decay_rates(3, 5, 1, (3, 5)) == decay_rates(3, 5, stop=1)  # (re-planned again: 1 ulp off)
    # A finished run continued: on at lr_final, not on down (it went 100 times below it over as many epochs again)
    assert decay_rates(4, 8, stop=4)[4:] == pytest.approx([1e-4] * 4)
    assert decay_rates(2, 4, stop=2)[2:] == pytest.approx([1e-4] * 2)

"""Part 3's dequantizers: the variational one at the identity gives today's uniform bound, its log q against
autograd, and on all 16 binary 2x2 images its bound against the exact discrete likelihood; the 8-bit task and
the dequantization flag of ``part3_flows.train``, end to end on tiny data through the scripts that read runs."""
import itertools
import json
import math

import pytest
import torch

from part3_flows.dequantization import UniformDequantizer, VariationalDequantizer
from part3_flows.modules import NUM_LEVELS, ImageFlowModule
from part3_flows.networks import ImageFlow
from part3_flows.train import main
from shared.densities import dequantize
from tests.conftest import (CONFIGS, TINY_FLOW_RUN, assert_fails_fast, assert_log_det_is_exact, load_script,
                            parse_flow_args, randomise)

SHAPE = (1, 4, 4)
ALL_2X2_BINARY_IMAGES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)


def images_of(data: str, n: int = 6, shape=SHAPE, seed: int = 0) -> torch.Tensor:
    """Images as the DataModule serves ``data``: levels k / (L - 1) in [0, 1]."""
    top = NUM_LEVELS[data] - 1
    return torch.randint(0, top + 1, (n, *shape), generator=torch.Generator().manual_seed(seed)).float() / top


def tiny_flow(shape=SHAPE) -> ImageFlow:
    return randomise(ImageFlow(shape, num_channels=8, num_blocks=1, num_scales=1))


@pytest.mark.parametrize("data", ["binary", "8bit"])
def test_a_fresh_variational_dequantizer_is_uniform_and_gives_todays_bound(data):
    """Its couplings start as the identity, so q is uniform: on the same noise the bound is today's
    -log p((k + u) / L) + D log L, for the uniform dequantizer and the new one alike."""
    flow, x = tiny_flow(), images_of(data)
    noise = torch.rand_like(x)
    levels = NUM_LEVELS[data]
    today = -flow.log_prob(dequantize(torch.round(x * (levels - 1)), levels, noise)) + x[0].numel() * math.log(levels)
    for dequantizer in (UniformDequantizer(), VariationalDequantizer(SHAPE, num_channels=8)):
        module = ImageFlowModule(flow, dequantizer, data=data)
        with torch.no_grad():
            u, log_q = dequantizer(x, noise)
            torch.testing.assert_close(u, noise, atol=1e-6, rtol=0)
            torch.testing.assert_close(log_q, torch.zeros(len(x)), atol=1e-4, rtol=0)
            torch.testing.assert_close(module.nll(x, noise), today, atol=1e-3, rtol=1e-6)


def test_variational_noise_stays_in_the_cell_and_depends_on_the_image():
    dequantizer = randomise(VariationalDequantizer(SHAPE, num_channels=8))
    x, noise = images_of("8bit", n=2), torch.rand(1, *SHAPE).expand(2, *SHAPE)
    with torch.no_grad():
        u, log_q = dequantizer(x, noise)
    assert ((u >= 0) & (u <= 1)).all() and torch.isfinite(log_q).all()
    assert not torch.allclose(u[0], u[1])  # one base draw, two images, two proposals
    assert not torch.allclose(u, noise, atol=1e-3)


@pytest.mark.parametrize("data", ["binary", "8bit"])
def test_log_q_is_minus_the_autograd_log_det_of_the_noise_map(data):
    """eps ~ U(0, 1)^D has density 1, so log q(u | x) = -log|det du/deps|, J by autograd (float64)."""
    dequantizer = randomise(VariationalDequantizer(SHAPE, num_channels=8)).double()
    for image, noise in zip(images_of(data, n=3).double(), torch.rand(3, *SHAPE, dtype=torch.float64)):
        def noise_map(eps, image=image):
            u, log_q = dequantizer(image.unsqueeze(0), eps)
            return u, -log_q
        assert_log_det_is_exact(noise_map, noise.unsqueeze(0))


def test_on_all_binary_2x2_images_the_bound_never_beats_the_exact_likelihood():
    """A tiny flow on 4 dims, whose exact P(x) is its density integrated over the 16 cells of [0, 1)^4.

    q is first fitted to the flow (flow frozen), so the bound is tight enough for the comparison to
    bite: a wrong sign or a missing term of log q would put it below the exact figure or far above it.
    Monte Carlo with standard errors from the draws themselves: the tolerance is 4 standard errors
    of (mean bound - exact), both estimates' errors together."""
    torch.manual_seed(0)
    flow = tiny_flow((1, 2, 2)).requires_grad_(False)
    module = ImageFlowModule(flow, VariationalDequantizer((1, 2, 2), num_channels=16), data="binary")
    uniform = ImageFlowModule(flow, data="binary")
    x = ALL_2X2_BINARY_IMAGES
    optimizer = torch.optim.Adam(module.dequantizer.parameters(), lr=3e-2)
    for _ in range(60):
        optimizer.zero_grad()
        module.nll(x.repeat(16, 1, 1, 1)).mean().backward()
        optimizer.step()

    draws, cell_points = 1000, 20_000
    with torch.no_grad():
        bounds = module.nll(x.repeat(draws, 1, 1, 1)).view(draws, 16)
        uniform_bounds = uniform.nll(x.repeat(draws, 1, 1, 1)).view(draws, 16)
        u = torch.rand(cell_points, 1, *x.shape[1:])
        densities = flow.log_prob(((x + u) / 2).flatten(0, 1)).view(cell_points, 16).exp()
    exact = -(densities.mean(0) / 2 ** 4).log()  # P(x) = volume of a cell (2^-4) x mean density in it
    exact_se = densities.std(0) / densities.mean(0) / math.sqrt(cell_points)  # delta method: se of log of a mean
    bound, bound_se = bounds.mean(0), bounds.std(0) / math.sqrt(draws)
    tolerance = 4 * (bound_se ** 2 + exact_se ** 2).sqrt()
    assert (bound >= exact - tolerance).all()
    assert (bound < uniform_bounds.mean(0)).all()  # the fitted q tightens every image's bound
    assert torch.exp(-bound).sum() <= torch.exp(-exact).sum() <= 1
    # E_q[exp(-bound)] = E_q[p(y) / (q(u | x) 2^D)] is P(x) itself when log q is right.
    weights = torch.exp(-bounds)
    weights_se = (weights.std(0) ** 2 / draws + (torch.exp(-exact) * exact_se) ** 2).sqrt()
    assert ((weights.mean(0) - torch.exp(-exact)).abs() <= 4 * weights_se).all()


# --- the command -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--task", "mnist8bit", "--binarization", "dynamic"], "--binarization dynamic: only runs with --task mnist use it"),
    (["--dequantization", "variational"], "--dequantization variational: only runs with an MNIST task use it"),
    (["--task", "mnist8bit", "--dequant_channels", "0"], "--dequant_channels must be positive, got 0"),
    (["--task", "mnist", "--dequant_couplings", "-1"], "--dequant_couplings must be positive, got -1"),
    (["--task", "mnist", "--dequantization", "gaussian"], "invalid choice: 'gaussian'"),
])
def test_bad_dequantization_and_task_flags_fail_fast_with_one_line(tmp_path, capsys, flags, message):
    assert_fails_fast(lambda: main([*TINY_FLOW_RUN, "--log_dir", str(tmp_path), *flags]), tmp_path, capsys, message)


@pytest.mark.parametrize("flags, name", [
    (["--task", "mnist8bit"], "flow_mnist8bit_c64_b4_s2_vardeq"),  # its measured default
    (["--task", "mnist8bit", "--dequantization", "uniform"], "flow_mnist8bit_c64_b4_s2"),
    (["--task", "mnist8bit", "--logit_alpha", "0.05"], "flow_mnist8bit_c64_b4_s2_vardeq_a0.05"),
    (["--task", "mnist"], "flow_mnist_c64_b4_s2_vardeq"),  # the binary task's measured defaults too
    # The settings of the runs made before the flags, now named by their alpha.
    (["--task", "mnist", "--dequantization", "uniform", "--logit_alpha", "0.05"], "flow_mnist_c64_b4_s2_a0.05"),
    (["--task", "mnist", "--binarization", "dynamic"], "flow_mnist_c64_b4_s2_dynamic_vardeq"),
])
def test_run_names_say_the_task_and_the_dequantization(flags, name):
    assert parse_flow_args(flags)["name"] == name


def test_the_shipped_8bit_config_is_the_8bit_task_with_the_mnist_defaults():
    from_config = parse_flow_args(["--config", str(CONFIGS / "flow_mnist8bit.yaml")])
    assert from_config["set_in_file"] == ["task"]  # where the one setting came from, so that errors can say it
    assert {**from_config, "config": None, "set_in_file": []} == parse_flow_args(["--task", "mnist8bit"])
    assert (from_config["batch_size"], from_config["epochs"], from_config["dequantization"]) == (64, 34, "variational")
    assert (from_config["logit_alpha"], from_config["temperature"]) == (1e-5, 1.0)


TINY_8BIT_RUN = [*TINY_FLOW_RUN, "--task", "mnist8bit", "--dequantization", "variational", "--subset", "64", "--epochs",
                 "1", "--num_channels", "8", "--num_blocks", "1", "--dequant_channels", "4", "--dequant_couplings", "2",
                 "--test_dequant_samples", "2"]


@pytest.fixture(scope="module")
def tiny_8bit_run(tmp_path_factory):
    """(metrics, run directory) of a one-step 8-bit flow run with variational dequantization."""
    log_dir = tmp_path_factory.mktemp("runs")
    metrics = main([*TINY_8BIT_RUN, "--log_dir", str(log_dir)])
    return metrics, log_dir / "flow_mnist8bit_c8_b1_s2_vardeq" / "version_0"


def test_smoke_8bit_variational_training_reports_bits_per_8bit_pixel(tiny_8bit_run):
    metrics, run_dir = tiny_8bit_run
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert math.isfinite(metrics["test_bpd"]) and metrics["test_iw_bpd"] <= metrics["test_bpd"]
    # An untrained flow on 8-bit pixels: a few bits per pixel, far from the binary task's < 1.
    assert 1 < metrics["test_bpd"] < 12 and metrics["data"] == "8-bit grey"

    from shared.runs import load_run
    model = load_run(run_dir)[0]
    assert model.data == "8bit" and isinstance(model.dequantizer, VariationalDequantizer)
    samples = model.sample(4)
    assert torch.equal(samples, torch.round(samples * 255) / 255) and 0 <= samples.min() and samples.max() <= 1
    ends = images_of("8bit", n=2, shape=(1, 28, 28))
    assert torch.equal(model.interpolate(ends[:1], ends[1:], steps=2)[:, 0], ends[:1])  # ends decode to themselves


@pytest.mark.slow
def test_evaluate_and_compare_read_an_8bit_flow_run(tiny_8bit_run, tmp_path, tiny_judge_path):
    metrics, run_dir = tiny_8bit_run
    figures = load_script("evaluate").main([str(run_dir), "--num_samples", "50", "--judge", str(tiny_judge_path)])
    assert figures["reference"] == "8-bit grey"

    compare = load_script("compare")
    spec = compare.Model("flow", "Flow (8-bit)", "flow 8-bit", run_dir.parent.name, "part3_flows.train",
                         ("--config", str(CONFIGS / "flow_mnist8bit.yaml"), "--dequantization", "variational"))
    report = compare.main(["--log_dir", str(run_dir.parents[1]), "--out", str(tmp_path), "--num_samples", "50",
                           "--frankenstein", "10", "--judge", str(tiny_judge_path)], specs=(spec,)).read_text()
    likelihoods = report.split("### Test set: 8-bit grey MNIST")[1]
    row = next(line for line in likelihoods.splitlines() if line.startswith("| Flow (8-bit) | "))
    assert f"{metrics['test_bpd']:.4f}" in row and VariationalDequantizer.bound in row

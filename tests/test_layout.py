"""The house plan holds: old import paths still work, commands are leaves, files stay small."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("shared", "part1_vae", "part2_gan", "part3_flows")


def test_the_names_of_the_first_layout_import_the_same_objects():  # noqa: F401 (importing is the test)
    from part1_vae.models import CNNDecoder, CNNEncoder, MLPDecoder, MLPEncoder
    from part1_vae.networks import MLPEncoder as NewMLPEncoder
    from part1_vae.utils import KLD, sample_reparameterize
    from part1_vae.vae import VAE
    from part2_gan.gan import GAN
    from part2_gan.models import DiscriminatorDCGAN, DiscriminatorMLP, GeneratorDCGAN, GeneratorMLP
    from part3_flows.distributions import BimodalGaussianDiag, MultivariateGaussianDiag
    from part3_flows.model import Coupling, NormalizingFlow
    from shared.data import BinarizedMNISTDataModule, MNISTDataModule
    from shared.densities import KLD as NewKLD
    from shared.utils import dequantize, elbo_to_bpd, interpolate_latents, make_grid, quantize, save_grid, visualize_manifold

    assert MLPEncoder is NewMLPEncoder and KLD is NewKLD and BinarizedMNISTDataModule is MNISTDataModule
    import part1_vae.modules
    import part3_flows.layers
    assert VAE is part1_vae.modules.VAE and Coupling is part3_flows.layers.MLPCoupling


def python_files():
    return [path for package in (*PACKAGES, "scripts") for path in (ROOT / package).glob("*.py")]


@pytest.mark.parametrize("path", python_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_nothing_imports_from_a_command(path):
    tree = ast.parse(path.read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.split(".")[-1].startswith("train")], path


@pytest.mark.parametrize("path", python_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_over_about_300_lines(path):
    assert len(path.read_text().splitlines()) <= 320


OPENMP_USERS = ("torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning")  # load torch, and its OpenMP


@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.py")), ids=lambda path: path.name)
def test_every_script_imports_the_project_before_torch(path):
    """shared/__init__.py sets the OpenMP threads' spinning (GOMP_SPINCOUNT), which OpenMP reads once, when torch
    loads it: a script that imported torch first ran (and timed, and trained) with other threads than the commands."""
    top = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name if isinstance(node, ast.Import) else node.module for node in top for alias in node.names]
    roots = [name.split(".")[0] for name in names if name]
    first_torch = next((i for i, root in enumerate(roots) if root in OPENMP_USERS), len(roots))
    assert any(root in PACKAGES for root in roots[:first_torch]) or first_torch == len(roots), path.name

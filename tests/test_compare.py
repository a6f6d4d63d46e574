"""The comparison report: end to end on tiny runs it trains itself, every section and figure present; a
default call writes a new folder and never touches the shipped report, which only --replace rewrites."""
import contextlib
import io
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import load_script

pytestmark = pytest.mark.filterwarnings("ignore:.*no `validation_step`.*")

FIGURES = {"samples.png", "interpolations.png", "latent_maps.png", "frankenstein.png"}
SHIPPED_REPORT, SHIPPED_FIGURE = "the shipped report", b"a shipped figure"


@pytest.fixture(scope="module")
def first_call(tmp_path_factory, tiny_judge_path):
    """compare.py's first call, without --replace, next to a shipped report: it trains every model's tiny run.
    Returns the folder it worked in, its flags, the report's path and what it printed."""
    root = tmp_path_factory.mktemp("compare")
    (root / "reports" / "comparison").mkdir(parents=True)
    (root / "reports" / "comparison.md").write_text(SHIPPED_REPORT)
    (root / "reports" / "comparison" / "samples.png").write_bytes(SHIPPED_FIGURE)
    argv = ["--log_dir", str(root / "runs"), "--out", str(root / "reports"), "--num_samples", "100",
            "--frankenstein", "40", "--iw_samples", "4", "--subset", "128", "--tsne_points", "200",
            "--judge", str(tiny_judge_path)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        path = load_script("compare").main(argv)
    return root, argv, path, printed.getvalue()


@pytest.mark.slow
def test_report_trains_missing_runs_and_writes_every_section(first_call):
    root, _, path, printed = first_call
    report = path.read_text()
    for section in ("## Runs", "## Likelihood", "## Sample quality", "## Interpolations", "## Latent spaces",
                    "## Frankenstein digits", "## Reading"):
        assert section in report
    for spec in load_script("compare").MODELS:
        assert spec.label in report
        assert (root / "runs" / spec.name / "version_0" / "metrics.json").is_file()
    assert "short run trained by compare.py" in report
    assert {p.name for p in path.parent.iterdir()} == FIGURES | {"comparison.md"}
    assert all(f"]({name})" in report for name in FIGURES)  # linked from the report's own folder
    assert report.count("AUROC") >= 2 and not re.search(r"\bnan\b", report, re.IGNORECASE)
    # Each phase on its own line as it goes, and where the report went.
    for line in ("Loaded VAE (MLP, z=20) from", "Sampling 100 images from GAN (MLP) and judging them: done in",
                 "Frankenstein scores of Flow (RealNVP) (80 images): done in",
                 "t-SNE of VAE (MLP, z=20) (200 points, perplexity 30, seed 0): done in", f"Report: {path}"):
        assert line in printed


@pytest.mark.slow
def test_a_default_call_writes_a_new_folder_and_leaves_the_shipped_report_alone(first_call):
    root, _, path, _ = first_call
    assert re.fullmatch(r"comparison-\d{8}-\d{6}", path.parent.name) and path.parent.parent == root / "reports"
    assert (root / "reports" / "comparison.md").read_text() == SHIPPED_REPORT
    assert [p.name for p in (root / "reports" / "comparison").iterdir()] == ["samples.png"]
    assert (root / "reports" / "comparison" / "samples.png").read_bytes() == SHIPPED_FIGURE
    assert {p.name for p in (root / "reports").iterdir()} == {"comparison", "comparison.md", path.parent.name}


@pytest.mark.slow
def test_the_20d_vae_latent_map_is_a_seeded_tsne_and_the_2d_vae_keeps_its_means(first_call):
    report = first_call[2].read_text()
    caption = report.split("## Latent spaces")[1].split("![latent maps]")[0]
    assert ("VAE (MLP, z=20): t-SNE (scikit-learn; perplexity 30, PCA initialisation, seed 0) of the posterior means "
            "of 200 test images") in caption
    assert "VAE (MLP, z=2): the posterior means of the 10,000 test images" in caption


@pytest.mark.slow
def test_replace_rewrites_the_shipped_report_and_removes_its_old_figures(first_call, tmp_path, capsys):
    root, argv, _, _ = first_call
    shipped = tmp_path / "reports"
    (shipped / "comparison").mkdir(parents=True)
    (shipped / "comparison.md").write_text(SHIPPED_REPORT)
    (shipped / "comparison" / "stale.png").write_bytes(SHIPPED_FIGURE)
    path = load_script("compare").main([*argv, "--out", str(shipped), "--replace"])  # the first call's runs
    assert path == shipped / "comparison.md" and {p.name for p in shipped.iterdir()} == {"comparison", "comparison.md"}
    report = path.read_text()
    assert "short run trained by compare.py" not in report and "## Latent spaces" in report
    assert {p.name for p in (shipped / "comparison").iterdir()} == FIGURES
    assert all(f"](comparison/{name})" in report for name in FIGURES)
    assert not list((root / "runs").glob("*/version_1"))  # the runs were reused, none trained
    assert f"Report: {path}" in capsys.readouterr().out


def test_calls_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    compare = load_script("compare")
    monkeypatch.setattr(compare.time, "strftime", lambda format: "20250101-120000")
    folders = [compare.destination(tmp_path, replace=False)[1] for _ in range(3)]
    assert [folder.name for folder in folders] == ["comparison-20250101-120000", "comparison-20250101-120000-2",
                                                   "comparison-20250101-120000-3"]
    assert all(folder.is_dir() for folder in folders)


def test_tsne_without_scikit_learn_fails_with_one_line(monkeypatch):
    from shared.report import load_tsne
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # what an environment without it raises
    with pytest.raises(SystemExit) as exit_info:
        load_tsne()
    assert str(exit_info.value) == "t-SNE needs scikit-learn: pip install -e '.[report]'"


@pytest.mark.parametrize("flag, value, message", [
    ("--num_samples", "1", "--num_samples must be at least 2"),
    ("--frankenstein", "1", "--frankenstein must be at least 2"),
    ("--iw_samples", "1", "--iw_samples must be at least 2"),
    ("--tsne_points", "30", "--tsne_points must be more than t-SNE's perplexity (30), got 30"),
    ("--subset", "-3", "argument --subset: must be positive, got -3"),
    ("--out", __file__, f"argument --out: {__file__} is a file, not a folder"),
    ("--judge", str(Path(__file__).parent), "is a folder: pass a judge checkpoint file")])
def test_invalid_counts_fail_fast(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("compare").main([flag, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_collect_figures_copies_the_latest_final_grid_and_skips_unfinished_runs(tmp_path, capsys):
    for version, epochs in ((0, (0, 10)), (1, (0, 10, 80))):
        samples = tmp_path / "runs" / "vae_mlp_z20" / f"version_{version}" / "samples"
        samples.mkdir(parents=True)
        (samples.parent / "metrics.json").write_text("{}")
        for epoch in epochs:
            (samples / f"samples_epoch{epoch:03d}.png").write_bytes(f"v{version} e{epoch}".encode())
    load_script("collect_figures").main(["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "vae_mlp_z20__samples_epoch080.png").read_bytes() == b"v1 e80"
    assert "skipped gan_mlp/samples_final: no finished run" in capsys.readouterr().out


def test_figures_of_different_binarizations_never_share_a_table():
    from part1_vae.modules import VAE
    from part1_vae.networks import MLPDecoder, MLPEncoder

    compare = load_script("compare")
    vae = VAE(MLPEncoder(784, [8], 2), MLPDecoder(2, [8]), z_dim=2)

    def loaded(label, data):
        metrics = {"test_iw_bpd": 0.2, "test_bpd": 0.21, "epochs": 1, "data": data}
        return compare.Loaded(compare.Model("vae", label, label, "vae", "part1_vae.train"), vae, Path("run"), metrics,
                              None, False)

    lines = compare.likelihood_tables([loaded("A", "threshold-binarized"), loaded("B", "dynamically binarized")])
    headings = [i for i, line in enumerate(lines) if line.startswith("### Test set")]
    assert [lines[i] for i in headings] == ["### Test set: dynamically binarized MNIST",
                                            "### Test set: threshold-binarized MNIST"]
    first_table = lines[headings[0]:headings[1]]
    assert any(line.startswith("| B |") for line in first_table) and not any(line.startswith("| A |")
                                                                              for line in first_table)


def test_the_command_column_writes_each_differing_setting_as_the_flag_that_sets_it():
    import argparse

    from shared.cli import float_or_none

    compare = load_script("compare")
    parser = argparse.ArgumentParser()
    actions = {action.dest: action for action in (
        parser.add_argument("--epochs", type=int), parser.add_argument("--actnorm", action=argparse.BooleanOptionalAction),
        parser.add_argument("--train_on_all", action="store_true"), parser.add_argument("--dims", type=int, nargs="+"),
        parser.add_argument("--lr_final", type=float_or_none))}
    words = [word for key, value in {"epochs": 45, "actnorm": False, "train_on_all": True, "dims": [64, 32],
                                     "lr_final": None}.items() for word in compare.flag_words(actions[key], value)]
    assert words == ["--epochs", "45", "--no-actnorm", "--train_on_all", "--dims", "64", "32", "--lr_final", "none"]
    assert vars(parser.parse_args(words)) == {"epochs": 45, "actnorm": False, "train_on_all": True, "dims": [64, 32],
                                              "lr_final": None}  # the words set what the run trained with


def test_frankenstein_scores_depend_on_the_seed_not_on_the_models_loaded_before():
    from tests.test_vae import small_vae
    compare, model = load_script("compare"), small_vae()
    images = (torch.rand(6, 1, 28, 28) > 0.5).float()
    first = compare.log_likelihood(model, images, iw_samples=3, seed=0)
    torch.rand(1000)  # what building another model does to the global random state
    assert torch.equal(compare.log_likelihood(model, images, iw_samples=3, seed=0), first)
    assert not torch.equal(compare.log_likelihood(model, images, iw_samples=3, seed=1), first)


def test_a_weight_averaged_model_counts_its_parameters_once():
    from shared.weight_average import averaged_copy
    network = torch.nn.Linear(3, 2)
    model = torch.nn.Module()
    model.network, model.average = network, averaged_copy(network)
    assert load_script("compare").num_parameters(model) == 3 * 2 + 2

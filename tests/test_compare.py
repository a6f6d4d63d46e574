"""The comparison report: end to end on tiny runs it trains itself, every section and figure present; a
default call writes a new folder and never touches the shipped report, which only --replace rewrites."""
import contextlib
import io
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shared import report_variants
from tests.conftest import CONFIGS, crashes_in, load_script

pytestmark = pytest.mark.filterwarnings("ignore:.*no `validation_step`.*")

FIGURES = {"samples.png", "interpolations.png", "latent_maps.png", "frankenstein.png"}
SHIPPED_REPORT, SHIPPED_FIGURE = "the shipped report", b"a shipped figure"


def models_in_float32(compare):
    """compare.py's models, the one its config trains in bf16 in float32: a CPU without bf16 instructions emulates
    bf16, 10 s of this fixture's 44 on one."""
    return tuple(replace(spec, short_flags=(*spec.short_flags, "--precision", "32-true"))
                 if spec.name == "gan_dcgan_code" else spec for spec in compare.MODELS)


@pytest.fixture(scope="module")
def first_call(tmp_path_factory, tiny_judge_path):
    """compare.py's first call, without --replace, next to a shipped report: it trains every model's tiny run.
    Returns the folder it worked in, its flags, the report's path and what it printed."""
    root = tmp_path_factory.mktemp("compare")
    (root / "reports" / "comparison").mkdir(parents=True)
    (root / "reports" / "comparison.md").write_text(SHIPPED_REPORT)
    (root / "reports" / "comparison" / "samples.png").write_bytes(SHIPPED_FIGURE)
    (root / "runs").mkdir()
    argv = ["--log_dir", str(root / "runs"), "--out", str(root / "reports"), "--num_samples", "100",
            "--frankenstein", "40", "--iw_samples", "4", "--subset", "128", "--tsne_points", "200",
            "--judge", str(tiny_judge_path)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        compare = load_script("compare")
        path = compare.main(argv, models_in_float32(compare))
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
    # Each variant its own tables, and the header says which data and how many test images (--subset 128).
    for heading in ("### Test set: 8-bit grey MNIST", "### Compared with 8-bit grey MNIST",
                    "### Compared with threshold-binarized MNIST", "### Digits: 8-bit grey MNIST",
                    "### Digits: threshold-binarized MNIST", "- **Spotting unnatural digits (8-bit grey).**"):
        assert heading in report
    header = report.split("## Runs")[0]
    assert "**threshold-binarized MNIST**" in header and "**8-bit grey MNIST**" in header
    assert "test set of 128 images" in header and "10,000" not in header
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
    (shipped / "comparison" / "notes.txt").write_text("a person's file, which no call deletes")
    (shipped / "comparison" / "drafts.png").mkdir()  # nor a folder
    (root / "runs" / "mixture_k20" / "version_7").mkdir()  # a newer run, interrupted
    compare = load_script("compare")
    path = compare.main([*argv, "--out", str(shipped), "--replace"], models_in_float32(compare))  # the first call's runs
    assert path == shipped / "comparison.md" and {p.name for p in shipped.iterdir()} == {"comparison", "comparison.md"}
    report = path.read_text()
    assert "short run trained by compare.py" not in report and "## Latent spaces" in report
    assert "(short run: 2 of 20 epochs, --subset 128)" in report  # still said of the runs this call did not train
    assert {p.name for p in (shipped / "comparison").iterdir()} == FIGURES | {"notes.txt", "drafts.png"}
    assert all(f"](comparison/{name})" in report for name in FIGURES)
    assert not list((root / "runs").glob("*/version_1"))  # the runs were reused, none trained
    printed = capsys.readouterr().out
    assert f"Report: {path}" in printed and "mixture_k20: version_7 newer but unfinished (no metrics.json): " \
        "version_0 is compared" in printed


def test_a_call_that_fails_while_drawing_writes_nothing_where_its_report_goes(first_call, tmp_path, monkeypatch):
    root, argv, _, _ = first_call
    compare = load_script("compare")

    def broken(*args, **kwargs):
        raise RuntimeError("the t-SNE failed")
    monkeypatch.setattr(compare, "latent_map_figure", broken)
    for out in (tmp_path / "new", tmp_path / "shipped"):
        (tmp_path / "shipped" / "comparison").mkdir(parents=True, exist_ok=True)
        (tmp_path / "shipped" / "comparison" / "samples.png").write_bytes(SHIPPED_FIGURE)
        with pytest.raises(RuntimeError, match="the t-SNE failed"):
            compare.main([*argv, "--out", str(out), *(["--replace"] * (out.name == "shipped"))],
                         compare.MODELS[:1])  # the mixture's run alone: quick, and enough to fail while drawing
    assert not (tmp_path / "new").exists()  # it left a folder of three figures and no report
    assert [p.name for p in (tmp_path / "shipped" / "comparison").iterdir()] == ["samples.png"]  # nor removed them
    assert (tmp_path / "shipped" / "comparison" / "samples.png").read_bytes() == SHIPPED_FIGURE


@pytest.mark.slow
def test_models_compares_only_the_models_it_names(first_call, tmp_path):
    root, argv, _, _ = first_call
    compare = load_script("compare")
    report = compare.main([*argv, "--out", str(tmp_path), "--models", "vae_mlp_z2", "mixture_k20"]).read_text()
    labels = {spec.name: spec.label for spec in compare.MODELS}
    assert labels["mixture_k20"] in report and labels["vae_mlp_z2"] in report
    assert not any(label in report for name, label in labels.items() if name not in ("mixture_k20", "vae_mlp_z2"))
    assert "## Latent spaces" in report and "## Frankenstein digits" in report
    # A selection without a judged model (the 2-D VAE's samples are not judged), or without a likelihood: no section
    # of what none of them has (both were tracebacks)
    alone = compare.main([*argv, "--out", str(tmp_path), "--models", "vae_mlp_z2"]).read_text()
    assert "## Likelihood" in alone and "## Sample quality" not in alone and "## Frankenstein digits" in alone
    gan = compare.main([*argv, "--out", str(tmp_path), "--models", "gan_mlp"]).read_text()
    assert "## Sample quality" in gan and "## Likelihood" not in gan and "## Frankenstein digits" not in gan
    assert gan.count(labels["gan_mlp"]) >= 3 and "images/s, " + labels["gan_mlp"] not in gan  # named once a sentence


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
    ("--seed", "-1", "--seed must be in [0, 2**32 - 1], got -1"),  # t-SNE refused it with a traceback, at the end
    ("--out", __file__, f"argument --out: {__file__} is a file, not a folder"),
    ("--judge", str(Path(__file__).parent), "is a folder: pass a judge checkpoint file"),
    ("--log_dir", "/nonexistent/typo", "--log_dir /nonexistent/typo: no such folder; compare.py trains each model"),
    ("--models", "vae", "argument --models: invalid choice: 'vae' (choose from")])
def test_invalid_counts_fail_fast(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("compare").main([flag, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_replace_refuses_a_folder_where_the_report_goes_before_any_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "comparison.md").mkdir()  # it failed with a traceback after the scoring, its old figures deleted
    (tmp_path / "comparison").mkdir()
    (tmp_path / "comparison" / "samples.png").write_bytes(b"old")
    compare = load_script("compare")
    monkeypatch.setattr(compare, "load_or_train", lambda *args: pytest.fail("worked before the flags were checked"))
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--out", str(tmp_path), "--replace", "--log_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "holds a folder comparison.md" in capsys.readouterr().err
    assert (tmp_path / "comparison" / "samples.png").read_bytes() == b"old"


def test_collect_figures_copies_the_latest_final_grid_and_skips_unfinished_and_subset_runs(tmp_path, capsys):
    for version, epochs, config in ((0, (0, 10), ""), (1, (0, 10, 80), "epochs: 80\n"), (2, (0, 2), "subset: 256\n")):
        samples = tmp_path / "runs" / "vae_mlp_z20" / f"version_{version}" / "samples"
        samples.mkdir(parents=True)
        (samples.parent / "metrics.json").write_text("{}")
        (samples.parent / "config.yaml").write_text(config)
        for epoch in epochs:
            (samples / f"samples_epoch{epoch:03d}.png").write_bytes(f"v{version} e{epoch}".encode())
    load_script("collect_figures").main(["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    # version_2, a smoke run on 256 images, makes no README figure
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["vae_mlp_z20__samples_epoch080.png"]
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

    lines = report_variants.likelihood_tables([loaded("A", "threshold-binarized"), loaded("B", "dynamically binarized")])
    headings = [i for i, line in enumerate(lines) if line.startswith("### Test set")]
    assert [lines[i] for i in headings] == ["### Test set: dynamically binarized MNIST",
                                            "### Test set: threshold-binarized MNIST"]
    first_table = lines[headings[0]:headings[1]]
    assert any(line.startswith("| B |") for line in first_table) and not any(line.startswith("| A |")
                                                                              for line in first_table)


def test_each_interpolation_row_names_its_data_variant():
    from part1_vae.modules import VAE
    from part1_vae.networks import MLPDecoder, MLPEncoder
    from shared.report import interpolation_rows

    compare = load_script("compare")
    vae = VAE(MLPEncoder(784, [8], 20), MLPDecoder(20, [8]), z_dim=20)
    loaded = compare.Loaded(compare.Model("vae", "VAE (MLP, z=20)", "VAE", "vae", "part1_vae.train"), vae, Path("run"),
                            {"data": "dynamically binarized"}, None, False)
    rows = interpolation_rows([loaded], {"dynamically binarized": torch.rand(8, 1, 28, 28)})
    assert [label for label, _ in rows] == ["VAE (MLP, z=20) (dynamically binarized): prior latents",
                                            "VAE (MLP, z=20) (dynamically binarized): encoded test images"]


def test_the_command_column_writes_each_differing_setting_as_the_flag_that_sets_it():
    import argparse

    from shared.flags import number_or_none

    compare = load_script("compare")
    parser = argparse.ArgumentParser()
    actions = {action.dest: action for action in (
        parser.add_argument("--epochs", type=int), parser.add_argument("--actnorm", action=argparse.BooleanOptionalAction),
        parser.add_argument("--train_on_all", action="store_true"), parser.add_argument("--dims", type=int, nargs="+"),
        parser.add_argument("--lr_final", type=number_or_none))}
    words = [word for key, value in {"epochs": 45, "actnorm": False, "train_on_all": True, "dims": [64, 32],
                                     "lr_final": None}.items() for word in compare.flag_words(actions[key], value)]
    assert words == ["--epochs", "45", "--no-actnorm", "--train_on_all", "--dims", "64", "32", "--lr_final", "none"]
    assert vars(parser.parse_args(words)) == {"epochs": 45, "actnorm": False, "train_on_all": True, "dims": [64, 32],
                                              "lr_final": None}  # the words set what the run trained with


def test_the_command_column_leaves_out_a_setting_the_run_never_read(tmp_path):
    """A DCGAN run without the judge curve records no curve samples; the column wrote the default for them, which
    differs from the shipped config's (QA)."""
    import yaml

    from part2_gan.train import build_parser, check, default_name
    from shared.cli import NOT_SAVED, parse_args

    compare = load_script("compare")
    args = parse_args(build_parser(), ["--config", str(CONFIGS / "gan_dcgan.yaml"), "--judge_every", "0",
                                       "--eval_samples", "0"], check, default_name)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({key: value for key, value in vars(args).items()
                                                          if key not in (*NOT_SAVED, *args.unused)}))
    spec = next(spec for spec in compare.MODELS if spec.name == "gan_dcgan")
    shown = compare.command(compare.Loaded(spec, None, tmp_path, {}, None, False))
    assert "--judge_every 0" in shown and "--judge_every_samples" not in shown, shown


def test_frankenstein_scores_depend_on_the_seed_not_on_the_models_loaded_before():
    from shared import report_variants as compare
    from tests.conftest import small_vae
    model, images = small_vae(), (torch.rand(6, 1, 28, 28) > 0.5).float()
    first = compare.log_likelihood(model, images, iw_samples=3, seed=0)
    torch.rand(1000)  # what building another model does to the global random state
    assert torch.equal(compare.log_likelihood(model, images, iw_samples=3, seed=0), first)
    assert not torch.equal(compare.log_likelihood(model, images, iw_samples=3, seed=1), first)


def test_a_weight_averaged_model_counts_its_parameters_once():
    from shared.weight_average import averaged_copy
    network = torch.nn.Linear(3, 2)
    model = torch.nn.Module()
    model.network, model.average = network, averaged_copy(network)
    assert report_variants.num_parameters(model) == 3 * 2 + 2


def fake(label, variant, bpd=None, data="binary", run_dir=Path("run"), metrics_data=True):
    """A Loaded row of a model of MNIST ``variant`` (with a likelihood of ``bpd`` bits per dimension where given), for
    the tests that every figure is labelled with its variant and figures of different variants share no ranking."""
    from shared.report import Loaded, Model
    seen = []
    model = SimpleNamespace(data=data, likelihood_kind="exact" if bpd else None, likelihood_metric="test_bpd",
                            seen=seen, log_likelihood=lambda images, k: seen.append(images) or -images.sum((1, 2, 3)))
    metrics = {"epochs": 1, **({"data": variant} if metrics_data else {}), **({"test_bpd": bpd} if bpd else {})}
    return Loaded(Model("flow", label, label, label, "part3_flows.train"), model, run_dir, metrics, None, False)


def judged(loaded, reference, frechet, real_frechet):
    return {"loaded": loaded, "reference": reference, "frechet_distance": frechet, "real_frechet_distance": real_frechet,
            "images_per_second": 100.0, **{f"{real}{name}": value for real in ("", "real_") for name, value in
                                           {"inception_score": 5.0, "digits_covered": 10, "class_kl_to_uniform": 0.1,
                                            "mean_max_prob": 0.9}.items()}}


def test_the_reading_ranks_within_a_variant_only():
    from shared.report import reading
    binary, mixture = fake("Binary VAE", "threshold-binarized", 0.14), fake("Mixture", "threshold-binarized", 0.28)
    dynamic, grey = fake("Dynamic VAE", "dynamically binarized", 0.12), fake("Grey flow", "8-bit grey", 1.1, data="8bit")
    gan = fake("Grey GAN", "8-bit grey", data="grey")
    quality = [judged(binary, "threshold-binarized", 200.0, 2.0), judged(dynamic, "dynamically binarized", 150.0, 2.0),
               judged(grey, "8-bit grey", 160.0, 2.0), judged(gan, "8-bit grey", 5.0, 2.0)]
    aurocs = {"Binary VAE": 0.9, "Mixture": 0.8, "Dynamic VAE": 0.7, "Grey flow": 0.95}
    lines = reading([binary, mixture, dynamic, grey, gan], quality, aurocs)
    samples = next(line for line in lines if line.startswith("- **Samples.**"))
    for best in ("against threshold-binarized MNIST, Binary VAE (200.00", "against dynamically binarized MNIST, "
                 "Dynamic VAE (150.00", "against 8-bit grey MNIST, Grey GAN (5.00"):
        assert best in samples
    spotting = [line for line in lines if line.startswith("- **Spotting")]
    assert [sorted(label for label in aurocs if label in line) for line in spotting] == [
        ["Grey flow"], ["Dynamic VAE"], ["Binary VAE", "Mixture"]]
    assert "(threshold-binarized).** On threshold-binarized digits, Binary VAE separates" in spotting[2]
    likelihood = next(line for line in lines if line.startswith("- **Likelihood.**"))
    assert "On threshold-binarized MNIST, Binary VAE assigns" in likelihood and "; Mixture the lowest" in likelihood
    assert "On 8-bit grey MNIST, Grey flow assigns" in likelihood


def test_sample_quality_has_a_table_and_a_ceiling_per_reference():
    from shared.report import quality_tables
    binary, grey = fake("Binary VAE", "threshold-binarized", 0.14), fake("Grey GAN", "8-bit grey", data="grey")
    lines = quality_tables([judged(binary, "threshold-binarized", 200.0, 2.0), judged(grey, "8-bit grey", 5.0, 1.5)])
    headings = [i for i, line in enumerate(lines) if line.startswith("### ")]
    assert [lines[i] for i in headings] == ["### Compared with 8-bit grey MNIST", "### Compared with threshold-binarized MNIST"]
    grey_table = lines[headings[0]:headings[1]]
    assert [line.split(" | ")[0] for line in grey_table if line.startswith("| ") and "---" not in line][1:] == [
        "| Grey GAN", "| *real MNIST (8-bit grey)*"]


def test_frankenstein_digits_are_the_same_digits_in_each_variant():
    from shared.data import DYNAMIC_EVAL_SEEDS, to_model_range
    from shared.frankenstein import frankenstein_digits
    from shared.report_variants import frankenstein_sets
    images, labels = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8), torch.arange(30) % 10
    sets = frankenstein_sets(["8-bit grey", "dynamically binarized", "threshold-binarized"], images, labels, 12, seed=3)
    (grey, grey_spliced), (binary, binary_spliced) = sets["8-bit grey"], sets["threshold-binarized"]
    assert grey.shape == (12, 1, 28, 28) and len(grey.unique()) > 2 and torch.equal(grey * 255, (grey * 255).round())
    assert torch.equal(binary, (grey > 0.5).float()) and torch.equal(binary_spliced, (grey_spliced > 0.5).float())
    # The threshold-binarized digits are those the report scored before it told variants apart.
    generator = torch.Generator().manual_seed(3)
    chosen = torch.randperm(30, generator=generator)[:12]
    assert torch.equal(binary, to_model_range(images)[chosen])
    assert torch.equal(binary_spliced, frankenstein_digits(binary, labels[chosen], generator)[0])
    # Dynamically binarized: the project's one fixed draw of the test set, spliced alike.
    draw = torch.bernoulli(to_model_range(images, binarize=False),
                           generator=torch.Generator().manual_seed(DYNAMIC_EVAL_SEEDS["test"]))
    dynamic, dynamic_spliced = sets["dynamically binarized"]
    assert torch.equal(dynamic, draw[chosen])
    assert torch.equal(dynamic_spliced[..., :14], dynamic[..., :14]) and not torch.equal(dynamic_spliced, dynamic)


def test_an_8bit_model_scores_grey_digits_and_is_ranked_in_a_table_of_its_own():
    from shared.report_variants import frankenstein_scores, frankenstein_sets, frankenstein_tables
    images, labels = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8), torch.arange(30) % 10
    grey, binary = fake("Grey flow", "8-bit grey", 1.1, data="8bit"), fake("Binary VAE", "threshold-binarized", 0.14)
    sets = frankenstein_sets(["8-bit grey", "threshold-binarized"], images, labels, 12, seed=0)
    scores, aurocs = frankenstein_scores([grey, binary], sets, iw_samples=2, seed=0)
    assert [torch.equal(seen, sets["8-bit grey"][i]) for i, seen in enumerate(grey.model.seen)] == [True, True]
    assert [torch.equal(seen, sets["threshold-binarized"][i]) for i, seen in enumerate(binary.model.seen)] == [True, True]
    assert set(aurocs) == {"Grey flow", "Binary VAE"}
    lines = frankenstein_tables([grey, binary], scores, aurocs)
    split = lines.index("### Digits: threshold-binarized MNIST")
    assert lines[0] == "### Digits: 8-bit grey MNIST" and sum(line.startswith("| Grey flow |") for line in lines[:split]) == 1
    assert not any(line.startswith("| Grey flow |") for line in lines[split:])


def test_a_runs_variant_comes_from_its_metrics_else_its_config_else_its_model(tmp_path):
    from shared.report import data_of
    (tmp_path / "config.yaml").write_text("data:\n  pixels: dynamically binarized\n  subset: null\n")
    assert data_of(fake("A", "8-bit grey", data="8bit")) == "8-bit grey"
    assert data_of(fake("B", None, run_dir=tmp_path, metrics_data=False)) == "dynamically binarized"
    assert data_of(fake("C", None, data="8bit", metrics_data=False)) == "8-bit grey"
    assert data_of(fake("D", None, metrics_data=False)) == "threshold-binarized"


def test_the_header_names_the_variants_and_the_test_sets_the_runs_used(tmp_path):
    from shared.report_variants import header
    (tmp_path / "config.yaml").write_text("data:\n  pixels: 8-bit grey\n  subset: 128\n")
    models = [fake("Binary VAE", "threshold-binarized", 0.14), fake("Grey flow", "8-bit grey", 1.1, data="8bit",
                                                                    run_dir=tmp_path),
              fake("Grey GAN", "8-bit grey", data="grey")]
    text = header(models)
    assert ("**8-bit grey MNIST** (the 256 grey levels, k / 255; Grey flow), test set of 128 images; and on "
            "**threshold-binarized MNIST** (pixels > 0.5; Binary VAE), test set of 10,000 images.") in text
    assert "Grey GAN" not in text


def test_a_dynamically_binarized_models_samples_are_judged_against_its_own_variant(tiny_judge, monkeypatch):
    from shared import report_variants
    binary, dynamic = fake("Binary VAE", "threshold-binarized", 0.14), fake("Dynamic VAE", "dynamically binarized", 0.12)
    monkeypatch.setattr(report_variants, "draw_samples", lambda model, n, seed: (torch.rand(n, 1, 28, 28) > 0.8).float())
    results = report_variants.sample_quality([binary, dynamic], tiny_judge[0], num_samples=50, seed=0)
    assert [r["reference"] for r in results] == ["threshold-binarized", "dynamically binarized"]
    # A ceiling of its own: real training images binarized by a draw, against the test set's fixed draw.
    assert results[0]["real_frechet_distance"] != results[1]["real_frechet_distance"]
    assert results[0]["real_mean_max_prob"] != results[1]["real_mean_max_prob"]


@pytest.mark.slow
def test_a_short_run_an_interrupt_stopped_is_finished_not_trained_anew(tmp_path, tiny_judge_path, monkeypatch):
    import part1_vae.modules

    compare = load_script("compare")
    mixture = next(spec for spec in compare.MODELS if spec.name == "mixture_k20")
    argv = ["--log_dir", str(tmp_path), "--out", str(tmp_path / "reports"), "--num_samples", "20", "--frankenstein",
            "10", "--iw_samples", "2", "--subset", "128", "--judge", str(tiny_judge_path)]
    monkeypatch.setattr(part1_vae.modules.MixtureModule, "train_batch",
                        crashes_in(part1_vae.modules.MixtureModule.train_batch, epoch=2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        compare.main(argv, (mixture,))
    monkeypatch.undo()
    run_dir = tmp_path / "mixture_k20" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").exists()
    own = tmp_path / "mixture_k20" / "version_1"  # a person's own run of that name, of 80 epochs, stopped too
    shutil.copytree(run_dir, own)
    (own / "config.yaml").write_text((own / "config.yaml").read_text().replace("epochs: 2\n", "epochs: 80\n"))
    broken = tmp_path / "mixture_k20" / "version_2"  # and one whose record cannot be read: passed over
    shutil.copytree(run_dir, broken)
    (broken / "config.yaml").write_text("epochs: [\n")
    compare.main(argv, (mixture,))
    assert not (tmp_path / "mixture_k20" / "version_3").exists()  # one was trained anew until 2026-12-07
    assert (run_dir / "metrics.json").is_file() and not (own / "metrics.json").exists()

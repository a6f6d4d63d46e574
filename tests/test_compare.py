"""The comparison report: end to end on tiny runs it trains itself, every section and figure present."""
import re

import pytest

from tests.conftest import load_script

pytestmark = pytest.mark.filterwarnings("ignore:.*no `validation_step`.*")


@pytest.mark.slow
def test_report_trains_missing_runs_and_writes_every_section(tmp_path, tiny_judge_path, capsys):
    compare = load_script("compare")
    argv = ["--log_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports"), "--num_samples", "100",
            "--frankenstein", "40", "--iw_samples", "4", "--subset", "128", "--judge", str(tiny_judge_path)]
    report = compare.main(argv).read_text()
    for section in ("## Runs", "## Likelihood", "## Sample quality", "## Interpolations", "## Latent spaces",
                    "## Frankenstein digits", "## Reading"):
        assert section in report
    for spec in compare.MODELS:
        assert spec.label in report
        assert (tmp_path / "runs" / spec.name / "version_0" / "metrics.json").is_file()
    assert "short run trained by compare.py" in report
    figures = tmp_path / "reports" / "comparison"
    assert {p.name for p in figures.iterdir()} == {"samples.png", "interpolations.png", "latent_maps.png",
                                                    "frankenstein.png"}
    assert report.count("AUROC") >= 2 and not re.search(r"\bnan\b", report, re.IGNORECASE)

    # A second call reuses the runs (no training) and rewrites the report from scratch.
    (figures / "stale.png").write_bytes(b"")
    report = compare.main(argv).read_text()
    assert "short run trained by compare.py" not in report and not (figures / "stale.png").exists()
    assert not list((tmp_path / "runs").glob("*/version_1"))


@pytest.mark.parametrize("flag", ["--num_samples", "--frankenstein", "--iw_samples"])
def test_invalid_counts_fail_fast(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("compare").main([flag, "1"])
    assert exit_info.value.code == 2 and f"{flag} must be at least 2" in capsys.readouterr().err


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

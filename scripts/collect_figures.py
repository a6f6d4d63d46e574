"""Copy the README's figures out of the latest finished runs: ``python scripts/collect_figures.py``.

Runs live under ``runs/`` (not in git); the README shows copies in ``reports/figures/``, each named
``<run name>__<file>.png`` so it is clear which run and which file it came from. A figure whose run
has not finished, or trained on a --subset of its data, is reported and skipped.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from shared.checks import unwritable
from shared.cli import OneLineArgumentParser
from shared.process import run_script
from shared.runs import DescriptionAndDefaultsFormatter, finished_runs, folder
from shared.yaml_file import read_yaml_mapping

# (run name, PNG under the run's samples/), in README order; "final" is the run's last epoch.
FIGURES = (
    ("vae_mlp_z20", "samples_final"), ("vae_mlp_z20", "sample_means_final"),
    ("vae_mlp_z20", "reconstructions_final"), ("vae_mlp_z20", "interpolations_final"),
    ("vae_mlp_z2", "manifold_final"), ("vae_mlp_z2", "latent_map_final"),
    ("vae_cnn_z20", "sample_means_final"),
    ("vae_mlp_z20_gaussian", "sample_means_final"), ("vae_mlp_z20_gaussian", "samples_final"),
    ("mixture_k20", "component_means_final"), ("mixture_k20", "samples_final"),
    ("gan_mlp", "samples_epoch000"), ("gan_mlp", "samples_epoch010"), ("gan_mlp", "samples_final"),
    ("gan_mlp", "interpolations_final"),
    ("gan_dcgan", "samples_final"), ("gan_dcgan", "interpolations_final"),
    ("flow_toy_k6_h64", "densities_epoch000"), ("flow_toy_k6_h64", "densities_final"),
    ("flow_toy_k6_h64", "flow_samples_final"), ("flow_toy_k6_h64", "bpd_curve_final"),
    # The README shows the MNIST flow's first run, of the command it gives (--name flow_mnist_c64_b4_s2, the name of
    # the run before the names said a logit alpha: --dequantization uniform --logit_alpha 0.05 ...).
    ("flow_mnist_c64_b4_s2", "samples_epoch010"), ("flow_mnist_c64_b4_s2", "samples_final"),
    ("flow_mnist_c64_b4_s2", "interpolations_final"),
    ("aae_swiss_roll_z2", "latent_map_final"), ("aae_swiss_roll_z2", "prior_walk_final"),
)


def on_all_its_data(run: Path) -> bool:
    """Whether ``run`` trained on all of its data: a smoke run of --subset N (tests, tries) makes no README figure."""
    try:
        return not read_yaml_mapping(run / "config.yaml").get("subset")
    except (OSError, ValueError):  # no config.yaml, or a damaged one: no figure to vouch for
        return False


def main(argv=None) -> None:
    parser = OneLineArgumentParser(prog="scripts/collect_figures.py", description=__doc__,
                                   formatter_class=DescriptionAndDefaultsFormatter)
    parser.add_argument("--log_dir", type=folder, default="runs", help="folder of the runs (the commands' --log_dir)")
    parser.add_argument("--out", type=folder, default="reports/figures",
                        help="folder to copy the figures to (made if missing)")
    args = parser.parse_args(argv)
    if not args.log_dir.is_dir():
        parser.error(f"--log_dir {args.log_dir}: no such folder: pass the folder the runs were written to")
    problem = unwritable(args.out)
    if problem:
        parser.error(f"--out {args.out}: {problem}: pass a folder you can write to")
    copied = 0
    for name, figure in FIGURES:
        runs = [run for run in finished_runs(args.log_dir, name) if on_all_its_data(run)]
        if not runs:
            print(f"skipped {name}/{figure}: no finished run of {name} under {args.log_dir} on all its data (runs "
                  f"of --subset N are left out)")
            continue
        samples = runs[-1] / "samples"
        if figure.endswith("_final"):  # the highest epoch written
            candidates = sorted(samples.glob(f"{figure.removesuffix('_final')}_epoch*.png"))
            source = candidates[-1] if candidates else samples / f"{figure}.png"
        else:
            source = samples / f"{figure}.png"
        if not source.is_file():
            print(f"skipped {name}/{figure}: {source} not found")
            continue
        target = args.out / f"{name}__{source.name}"
        args.out.mkdir(parents=True, exist_ok=True)  # only once there is a figure to put in it
        shutil.copyfile(source, target)
        print(f"{source} -> {target}")
        copied += 1
    if not copied:
        raise SystemExit(f"error: none of the README's figures was found under {args.log_dir} in a run on all its data: "
                         f"pass the --log_dir the README's runs were written to")


if __name__ == "__main__":
    run_script(main)

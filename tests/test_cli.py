"""Settings from flags and YAML: one typing for both, one-line errors, configs that hold only what differs."""
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from part1_vae.train import build_parser, check, default_name
from shared.cli import parse_args
from tests.conftest import CONFIGS, heavy_imports_of

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
COMMANDS = ["part1_vae.train", "part1_vae.train_mixture", "part2_gan.train", "part2_gan.train_aae", "part3_flows.train"]
# The flags whose defaults are a class's own (the parsers hold them as numbers, not to import the class):
# (command, flag, "module:class", the class's parameter).
CLASS_DEFAULTS = [
    *[("part1_vae.train", flag, "part1_vae.modules:VAE", parameter) for flag, parameter in
      [("lr", "lr"), ("iw_samples", "iw_samples"), ("likelihood", "likelihood"), ("objective", "objective"),
       ("train_k", "train_k"), ("adam_eps", "adam_eps"), ("lr_final", "lr_final")]],
    ("part1_vae.train", "num_filters", "part1_vae.networks:CNNEncoder", "num_filters"),
    ("part1_vae.train", "activation", "part1_vae.networks:MLPEncoder", "activation"),
    ("part1_vae.train_mixture", "lr", "part1_vae.modules:MixtureModule", "lr"),
    ("part1_vae.train_mixture", "num_components", "part1_vae.modules:MixtureModule", "num_components"),
    *[("part2_gan.train", flag, "part2_gan.modules:GAN", parameter) for flag, parameter in
      [("lr", "lr"), ("betas", "betas"), ("real_label", "real_label"), ("r1_gamma", "r1_gamma"), ("top_k", "top_k"),
       ("top_k_decay", "top_k_decay"), ("categorical_code", "num_categories"), ("info_weight", "info_weight"),
       ("ema_decay", "ema_decay"), ("interpolation_steps", "interpolation_steps"), ("lr_disc", "lr_disc")]],
    *[("part2_gan.train_aae", flag, "part2_gan.aae:AAE", flag) for flag in ("lr", "lr_adv", "prior")],
    ("part3_flows.train", "lr", "part3_flows.modules:ToyFlowModule", "lr"),
    *[("part3_flows.train", flag, "part3_flows.modules:ImageFlowModule", flag) for flag in
      ("temperature", "test_dequant_samples", "interpolation_steps", "ema_decay")],
    ("part3_flows.train", "logit_alpha", "part3_flows.networks:ImageFlow", "alpha"),
    ("part3_flows.train", "dequant_channels", "part3_flows.dequantization:VariationalDequantizer", "num_channels"),
    ("part3_flows.train", "dequant_couplings", "part3_flows.dequantization:VariationalDequantizer", "num_couplings"),
]
# The flags whose choices are a network module's registry: (command, flag, "module:registry").
CLASS_CHOICES = [("part1_vae.train", "activation", "part1_vae.networks:ACTIVATIONS"),
                 ("part2_gan.train", "norm_disc", "part2_gan.networks:DISCRIMINATOR_NORMS"),
                 ("part2_gan.train", "init", "part2_gan.networks:DCGAN_INITS"),
                 ("part2_gan.train_aae", "prior", "part2_gan.priors:PRIORS")]


def parse(argv):
    return parse_args(build_parser(), argv, check, default_name)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.stem)
def test_each_shipped_config_names_its_command_and_holds_only_what_differs_from_its_defaults(path):
    settings = yaml.safe_load(path.read_text())
    command = importlib.import_module(settings.pop("command"))
    task_defaults = getattr(command, "task_defaults", None)
    args = vars(parse_args(command.build_parser(), ["--config", str(path)], command.check, command.default_name,
                           task_defaults))
    defaults = vars(parse_args(command.build_parser(), [], command.check, command.default_name, task_defaults))
    with_task = vars(parse_args(command.build_parser(), [f"--task={settings['task']}"] if "task" in settings else [],
                                command.check, command.default_name, task_defaults))
    for name, value in settings.items():
        assert args[name] == value
        assert value != with_task[name] or value != defaults[name], f"{path.name} repeats the default {name}: {value}"


def test_yaml_values_are_typed_like_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nhidden_dims: 256\nz_dim: 4\nmodel: MLP\nprogress_bar: false\n")
    args = parse(["--config", str(config)])
    assert (args.lr, args.hidden_dims, args.z_dim, args.model) == (1e-3, [256], 4, "mlp")
    assert isinstance(args.lr, float)


def test_yaml_numbers_are_read_as_their_flag_reads_the_same_text_not_by_yaml_1_1(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("z_dim: 010\nname: yes\nsubset: null\n")  # YAML 1.1: z_dim 8, name True
    args = parse(["--config", str(config)])
    assert (args.z_dim, args.name, args.subset) == (10, "yes", None)
    assert parse(["--z_dim", "010"]).z_dim == 10


@pytest.mark.parametrize("text, message", [
    ('z_dim: "twenty"', "argument --z_dim: invalid int value: 'twenty'"),
    ("epochs: 2.5", "argument --epochs: invalid int value: '2.5'"),
    ("likelihood: Gaussian", "argument --likelihood: invalid choice: 'Gaussian'"),
    ('progress_bar: "no"', "argument --progress_bar/--no-progress_bar: expected true or false, got 'no'"),
    ("hidden_dims: [[1, 2]]", "argument --hidden_dims: expected values"),
    ("z_dim: [2, 3]", "argument --z_dim: expected one value"),
    ("z_dim: 2\n  bad: [", "is not valid YAML (line 2)"),
    ("- 1\n- 2", "must hold a mapping of flag names to values"),
    ("z_dims: 2", "unknown setting(s) z_dims"),
    ("z_dim: 3\n1: 2\nnull: 4", "unknown setting(s) 1, None"),
    ("seed: 0x1F", "argument --seed: invalid int value: '0x1F'"),
    ("progress_bar: no", "argument --progress_bar/--no-progress_bar: expected true or false, got 'no'"),
    ("# settings to come", "holds no settings: pass the file that does"),
    ("command: part2_gan.train\nmodel: dcgan", "was written by part2_gan.train, not part1_vae.train: use python -m "
                                               "part2_gan.train"),
    ("z_dim: 3\nlr: 0.01\nz_dim: 4", "is not valid YAML (line 3): z_dim given twice"),
    (b"z_dim: 3 # \xff", "is not UTF-8 text (byte 11)"),
])
def test_bad_yaml_values_fail_with_one_line_naming_the_file(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", str(config)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"config file {config}" in err and message in err


def test_a_yaml_nan_is_refused_as_a_flag_is_and_named_with_its_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("lr: nan\nz_dim: 0\n")
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", str(config)])
    assert exit_info.value.code == 2 and f"--lr must be finite, got nan (set in {config})" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--config", str(config), "--lr", "0.01"])
    assert capsys.readouterr().err.endswith(f"--z_dim must be positive, got 0 (set in {config})\n")
    with pytest.raises(SystemExit):
        parse(["--config", str(config), "--lr", "0.01", "--z_dim", "-1"])  # the flag's value, not the file's
    assert capsys.readouterr().err.endswith("--z_dim must be positive, got -1\n")


@pytest.mark.parametrize("module, text, flags, message", [
    ("part2_gan.train_aae", "z_dim: 3", ["--prior", "swiss_roll"], "--prior swiss_roll is 2-D: it needs --z_dim 2, got 3"),
    ("part3_flows.train", "ema_decay: 0.5", [], "--ema_decay 0.5: only runs with an MNIST task use it; drop it, or train with an MNIST task"),
])
def test_a_refusal_names_the_file_that_set_any_flag_it_names(tmp_path, capsys, module, text, flags, message):
    command = importlib.import_module(module)
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(command.build_parser(), ["--config", str(config), *flags], command.check, command.default_name,
                   getattr(command, "task_defaults", None))
    assert exit_info.value.code == 2 and capsys.readouterr().err.endswith(f"{message} (set in {config})\n")


@pytest.mark.parametrize("module, flags, message", [
    ("part1_vae.train", ["--model", "cnn", "--hidden_dims", "200"], "--hidden_dims [200]: only runs with --model mlp "
                                                                    "use it; drop it, or train with --model mlp"),
    ("part1_vae.train", ["--activation", "tanh", "--model", "cnn"], "--activation tanh: only runs with --model mlp"),
    ("part1_vae.train", ["--num_filters", "16"], "--num_filters 16: only runs with --model cnn"),
    ("part2_gan.train", ["--num_filters", "64"], "--num_filters 64: only runs with --model dcgan"),
    ("part2_gan.train", ["--model", "dcgan", "--dp_rate_gen", "0.2"], "--dp_rate_gen 0.2: only runs with --model mlp"),
    ("part2_gan.train", ["--info_weight", "2"], "--info_weight 2.0: only runs with --categorical_code 2 or more"),
    ("part3_flows.train", ["--task", "mnist", "--num_flows", "3"], "--num_flows 3: only runs with --task toy"),
    ("part3_flows.train", ["--temperature", "0.7"], "--temperature 0.7: only runs with an MNIST task"),
    ("part3_flows.train", ["--task", "mnist", "--dequantization", "uniform", "--dequant_channels", "8"],
     "--dequant_channels 8: only runs with --dequantization variational"),
])
def test_a_flag_the_run_would_not_read_is_refused(capsys, module, flags, message):
    command = importlib.import_module(module)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(command.build_parser(), flags, command.check, command.default_name,
                   getattr(command, "task_defaults", None))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_unread_flag_at_its_default_is_no_mistake_as_a_run_s_config_yaml_holds_them_all(tmp_path, capsys):
    args = parse(["--model", "cnn", "--hidden_dims", "512", "--activation", "relu"])
    assert args.model == "cnn"
    config = tmp_path / "c.yaml"
    config.write_text("hidden_dims: 200\nmodel: cnn\n")  # a file that leaves its own value unread
    with pytest.raises(SystemExit):
        parse(["--config", str(config)])
    assert capsys.readouterr().err.endswith(f"train with --model mlp (set in {config})\n")
    # One that a typed flag leaves unread goes, as the shipped GAN config's curve samples beside --judge_every 0
    config.write_text("hidden_dims: 200\n")
    assert "hidden_dims" in parse(["--config", str(config), "--model", "cnn"]).unused


def test_flags_are_not_matched_by_prefix(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--epoch", "1"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --epoch 1" in capsys.readouterr().err


def imported(where: str):
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("command, flag, where, parameter", CLASS_DEFAULTS, ids=lambda value: str(value))
def test_a_flag_defaults_to_what_its_class_defaults_to(command, flag, where, parameter):
    default = inspect.signature(imported(where)).parameters[parameter].default
    expected = list(default) if isinstance(default, tuple) else default  # nargs flags give lists
    assert importlib.import_module(command).build_parser().get_default(flag) == expected


@pytest.mark.parametrize("command, flag, where", CLASS_CHOICES, ids=lambda value: str(value))
def test_a_flag_offers_exactly_the_choices_its_network_module_builds(command, flag, where):
    action = next(action for action in importlib.import_module(command).build_parser()._actions if action.dest == flag)
    assert list(action.choices) == list(imported(where))


def test_the_judge_flag_s_help_names_the_bundled_judge():
    from part2_gan.settings import BUNDLED_JUDGE
    from shared.judge import DEFAULT_JUDGE_PATH

    assert Path(__file__).resolve().parents[1] / BUNDLED_JUDGE == DEFAULT_JUDGE_PATH


@pytest.mark.parametrize("command, refused, message", [
    ("part1_vae.train", ["--z_dim", "0"], "--z_dim must be positive, got 0"),
    ("part1_vae.train_mixture", ["--num_components", "0"], "--num_components must be positive, got 0"),
    ("part2_gan.train", ["--judge_every", "-1"], "--judge_every must be >= 0 (0: off), got -1"),  # checked before the
    ("part2_gan.train_aae", ["--batch_size", "1"], "--batch_size 1: batch norm cannot train"),  # judge file is read
    ("part3_flows.train", ["--num_flows", "0"], "--num_flows must be positive, got 0"),
])
def test_help_and_a_refused_flag_answer_before_torch_or_lightning_is_imported(command, refused, message):
    """Importing Lightning takes 5 s here: a command's parser, its help and its own refusals need neither."""
    imported, done = heavy_imports_of(
        f"from {command} import build_parser, check, default_name\nfrom shared.cli import parse_args\n"
        f"for argv in (['--help'], ['--epochs', '0'], {refused!r}):\n"
        "    try:\n        parse_args(build_parser(), argv, check, default_name)\n"
        "    except SystemExit as stop:\n        assert stop.code in (0, 2), stop.code")
    assert imported == [], done.stderr[-2000:]
    assert "--epochs must be positive, got 0" in done.stderr and message in done.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_help_shows_every_default(capsys, module):
    parser = importlib.import_module(module).build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.count("(default:") == sum(action.dest != "help" for action in parser._actions) > 20
    if module == "part3_flows.train":  # the MNIST tasks' own defaults beside the toy's
        assert "per training batch [--task mnist: 64, --task mnist8bit: 64] (default: 256)" in " ".join(out.split())
        # a task's default only where it differs (the temperature's was shown as 1.0 for each task beside 1.0, QA)
        assert "per test image [--task mnist8bit: 8] (default: 4)" in " ".join(out.split())
        assert "when sampling (default: 1.0)" in " ".join(out.split())
    if module == "part1_vae.train":
        for shown in ("--epochs EPOCHS", "(default: 80)", "(default: 1000)", "(default: bernoulli)", "(default: mlp)"):
            assert shown in out


def test_resume_without_a_folder_takes_the_newest_run_of_that_name_that_has_a_last_checkpoint(tmp_path):
    for version, last in [("version_2", True), ("version_10", True), ("version_11", False), ("version_old", True)]:
        run = tmp_path / "vae_mlp_z20" / version
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("z_dim: 20\n")
        if last:
            (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert parse(["--log_dir", str(tmp_path), "--resume"]).resume == str(tmp_path / "vae_mlp_z20" / "version_10")


def test_resume_without_a_folder_names_the_checkpoints_kept_where_none_is_last(tmp_path, capsys):
    run = tmp_path / "vae_mlp_z20" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best-epoch003.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit):
        parse(["--log_dir", str(tmp_path), "--resume"])
    assert (f"no run with checkpoints/last.ckpt under {tmp_path / 'vae_mlp_z20'} (there is "
            f"version_0/checkpoints/best-epoch003.ckpt: copy one to last.ckpt beside it to resume from it)"
            in capsys.readouterr().err)


def test_resume_given_a_runs_name_names_its_runs(tmp_path, capsys):
    """``--resume runs/vae_mlp_z20`` for one of its version folders: the one-line error says which (QA), as
    scripts/evaluate.py's does."""
    for version in (0, 1, 2):  # version_1 stopped before its first epoch's end: nothing to resume there
        (tmp_path / "vae_mlp_z20" / f"version_{version}" / "checkpoints").mkdir(parents=True)
        if version != 1:
            (tmp_path / "vae_mlp_z20" / f"version_{version}" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit):
        parse(["--resume", str(tmp_path / "vae_mlp_z20")])
    assert capsys.readouterr().err.endswith(f"--resume {tmp_path / 'vae_mlp_z20'}: no checkpoints/last.ckpt there; pass "
                                            f"one of its runs: {tmp_path}/vae_mlp_z20/version_0, "
                                            f"{tmp_path}/vae_mlp_z20/version_2\n")


def test_a_config_that_is_a_folder_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["--config", str(tmp_path)])
    assert f"config file {tmp_path} is a folder" in capsys.readouterr().err


def stopped_run(tmp_path, config: str) -> Path:
    """A run folder as --resume reads it: its config.yaml and a last.ckpt (never loaded by the parsing)."""
    run_dir = tmp_path / "myrun" / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").touch()
    (run_dir / "config.yaml").write_text(config)
    return run_dir


def test_a_config_given_again_on_resume_that_agrees_with_the_record_brings_no_note(tmp_path, capsys):
    run_dir = stopped_run(tmp_path, "command: part1_vae.train\nepochs: 2\nsample_epochs: [0]\n")
    (tmp_path / "same.yaml").write_text("epochs: 2\nsample_epochs: [0]\nz_dim: 20\n")
    (tmp_path / "other.yaml").write_text("epochs: 3\nsample_epochs: [0]\n")
    assert parse(["--resume", str(run_dir), "--config", str(tmp_path / "same.yaml")]).epochs == 2
    assert capsys.readouterr().out == ""
    assert parse(["--resume", str(run_dir), "--config", str(tmp_path / "other.yaml")]).epochs == 2
    assert capsys.readouterr().out == (f"--config {tmp_path / 'other.yaml'}: the resumed run goes on as recorded (epochs: "
                                       f"2), not as the file says (epochs: 3): a resume changes how a run goes on by "
                                       f"flag only\n")  # sample_epochs, the same in both, is not named


# For each setting a resume may change: flags that set it off a run's record (a run recorded with the parser's
# defaults), and the value the resumed run then has. The flows' settings of MNIST and of the toy task are read on a
# run of that task only.
RESUME_CHANGES = {
    "config": (["--config", "{tmp}/start.yaml"], "{tmp}/start.yaml"),
    "epochs": (["--epochs", "5"], 5),
    "num_workers": (["--num_workers", "1"], 1),
    "batches_per_call": (["--batches_per_call", "2"], 2),
    "data_dir": (["--data_dir", "{bundled}"], "{bundled}"),
    "log_dir": (["--log_dir", "{tmp}"], "{tmp}"),  # with RUN_DIR: where the run is
    "name": (["--name", "myrun"], "myrun"),
    "sample_epochs": (["--sample_epochs", "3"], [3]),
    "log_every_n_steps": (["--log_every_n_steps", "7"], 7),
    "progress_bar": (["--progress_bar"], True),
    "compile": (["--compile"], True),
    "accelerator": (["--accelerator", "cpu"], "cpu"),
    "devices": (["--devices", "1"], 1),
    "num_nodes": (["--num_nodes", "2"], 2),
    "strategy": (["--strategy", "ddp_find_unused_parameters_true"], "ddp_find_unused_parameters_true"),  # a GAN's
    "precision": (["--precision", "32"], "32"),  # Lightning's other name of 32-true, the one precision a flow takes
    "iw_samples": (["--iw_samples", "7"], 7),
    "eval_samples": (["--eval_samples", "100"], 100),
    "judge": (["--judge", "{tmp}/judge.pt"], "{tmp}/judge.pt"),
    "judge_every": (["--judge_every", "2"], 2),
    "judge_every_samples": (["--judge_every_samples", "500"], 500),
    "interpolation_steps": (["--interpolation_steps", "3"], 3),
    "plot_every": (["--plot_every", "2"], 2),
    "temperature": (["--temperature", "0.7"], 0.7),
    "test_dequant_samples": (["--test_dequant_samples", "2"], 2),
}


def test_the_test_below_tries_each_setting_a_resume_may_change():
    from shared.cli import RESUME_MAY_CHANGE

    assert set(RESUME_MAY_CHANGE) - {"resume"} == set(RESUME_CHANGES)  # --resume itself: every resume gives it


def resume_changes():
    for command in COMMANDS:
        parser = importlib.import_module(command).build_parser()
        for flag in (action.dest for action in parser._actions if action.dest in RESUME_CHANGES):
            yield command, flag


@pytest.mark.parametrize("command, flag", list(resume_changes()), ids=lambda value: str(value))
def test_a_setting_a_resume_may_change_is_taken_on_resume_off_the_runs_record(tmp_path, command, flag):
    """RESUME_MAY_CHANGE: each of its settings, typed with --resume, is the resumed run's (QA: each other one is
    refused as a change of the run's setup)."""
    from shared.data import BUNDLED_DIR

    module = importlib.import_module(command)
    task = "" if command != "part3_flows.train" else "task: toy\n" if flag == "plot_every" else "task: mnist\n"
    run_dir = stopped_run(tmp_path, f"command: {command}\n{task}")
    (tmp_path / "start.yaml").write_text(task or "seed: 42\n")  # a --config that agrees with the run
    flags, value = RESUME_CHANGES[flag]
    fill = dict(tmp=tmp_path, bundled=BUNDLED_DIR)
    flags = [text.format(**fill) for text in flags]
    value = value.format(**fill) if isinstance(value, str) else value
    defaults = {action.dest: action.default for action in module.build_parser()._actions}
    assert value != defaults[flag]  # off the record (which holds the defaults: it names no other value)
    args = parse_args(module.build_parser(), ["--resume", str(run_dir), *flags], module.check, module.default_name,
                      getattr(module, "task_defaults", None))
    assert getattr(args, flag) == value and args.resume == str(run_dir)

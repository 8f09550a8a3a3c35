"""TrainingConfig: defaults, the one validation table, YAML/dict round trips, one flag per field."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from otonom_trainer.config import (
    BALANCE_MODES,
    OPTIMIZERS,
    SPLITS,
    ConfigError,
    TrainingConfig,
    config_fields,
)

# the brief's defaults, written out so a changed default fails here
DEFAULTS: dict[str, Any] = {
    "output_dir": "models/rl_bc",
    "batch_size": 256,
    "lr": 1e-3,
    "max_epochs": 20,
    "model": "mlp",
    "hidden_dim": 128,
    "num_layers": 2,
    "dropout": 0.1,
    "weight_decay": 1e-5,
    "alpha": 1.0,
    "beta": 1.0,
    "logit_penalty": 0.0,
    "return_weight": 0.5,
    "risk_weight": 0.5,
    "optimizer": "adam",
    "class_balance": "none",
    "focal_gamma": 2.0,
    "awr_beta": None,  # plain behaviour cloning
    "awr_max_weight": 20.0,
    "val_fraction": 0.1,
    "split": "time",
    "patience": 5,
    "lr_plateau_patience": 2,
    "lr_plateau_factor": 0.5,
    "grad_clip": 1.0,
    "teacher_rows": 0,
    "teacher_noise": 0.3,
    "teacher_strategy": "strategies/baseline_v1.yaml",
    "seed": 42,
    "device": "auto",
    "tensorboard": False,
    "progress": True,
}


def test_defaults_are_the_guides() -> None:
    cfg = TrainingConfig("data/offline_dataset.npz")
    assert cfg.to_dict() == {"dataset_path": "data/offline_dataset.npz", **DEFAULTS}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("dataset_path", "", "non-empty path"),
        ("dataset_path", 3, "non-empty path"),
        ("output_dir", None, "non-empty path"),
        ("batch_size", 0, "integer >= 1"),
        ("batch_size", 2.5, "integer >= 1"),
        ("batch_size", True, "integer >= 1"),
        ("batch_size", "256", "integer >= 1"),
        ("max_epochs", -1, "integer >= 1"),
        ("hidden_dim", 0, "integer >= 1"),
        ("num_layers", 0, "integer >= 1"),
        ("lr", 0.0, "finite number > 0"),
        ("lr", -1e-3, "finite number > 0"),
        ("lr", "fast", "finite number > 0"),
        ("lr", float("nan"), "finite number > 0"),
        ("lr", float("inf"), "finite number > 0"),
        ("lr", False, "finite number > 0"),
        ("dropout", 1.0, "[0, 1)"),
        ("dropout", -0.1, "[0, 1)"),
        ("weight_decay", -1e-5, ">= 0"),
        ("alpha", -1.0, ">= 0"),
        ("beta", -0.5, ">= 0"),
        ("logit_penalty", -0.5, ">= 0"),
        ("focal_gamma", -2.0, ">= 0"),
        ("grad_clip", -1.0, ">= 0"),
        ("val_fraction", 0.0, "(0, 1)"),
        ("val_fraction", 1.0, "(0, 1)"),
        ("lr_plateau_factor", 1.0, "(0, 1)"),
        ("lr_plateau_factor", 0.0, "(0, 1)"),
        ("patience", -1, "integer >= 0"),
        ("lr_plateau_patience", 1.5, "integer >= 0"),
        ("seed", -1, "[0, 2**63)"),
        ("optimizer", "sgd", "'adam', 'adamw'"),
        ("class_balance", "weighted+focal", "'none', 'weighted', 'oversample', 'focal'"),
        ("split", "future", "'time', 'random'"),
        ("device", "tpu", "'cuda:N'"),
        ("device", "cuda:x", "'cuda:N'"),
        ("device", "CPU", "'cuda:N'"),
        ("tensorboard", "yes", "true or false"),
        ("progress", 1, "true or false"),
    ],
)
def test_a_bad_value_names_the_field_what_came_and_what_was_expected(
    name: str, value: Any, expected: str
) -> None:
    kwargs = {"dataset_path": "d.npz", name: value}
    with pytest.raises(ConfigError) as err:
        TrainingConfig(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{name}: got {value!r}; expected ")
    assert expected in message
    assert isinstance(err.value, ValueError)


def test_alpha_and_beta_cannot_both_be_zero() -> None:
    TrainingConfig("d.npz", alpha=0.0)  # one of them is enough
    TrainingConfig("d.npz", beta=0.0)
    with pytest.raises(ConfigError, match=r"alpha and beta: got alpha=0.0, beta=0.0"):
        TrainingConfig("d.npz", alpha=0.0, beta=0.0)


def test_values_are_normalised() -> None:
    cfg = TrainingConfig(Path("data") / "x.npz", output_dir=Path("out"), lr="1e-3", dropout=0)
    assert cfg.dataset_path == str(Path("data") / "x.npz")
    assert cfg.output_dir == "out"
    assert cfg.lr == 1e-3
    assert type(cfg.dropout) is float
    assert TrainingConfig("d.npz", device="cuda:1").device == "cuda:1"


def test_the_config_is_frozen_and_replace_validates_again() -> None:
    cfg = TrainingConfig("d.npz")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1  # type: ignore[misc]
    assert cfg.replace(lr=0.01).lr == 0.01
    with pytest.raises(ConfigError, match=r"^batch_size: got 0"):
        cfg.replace(batch_size=0)


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown configuration key\(s\) \['epochs'\]"):
        TrainingConfig.from_dict({"dataset_path": "d.npz", "epochs": 5})
    with pytest.raises(
        ConfigError, match=r"missing required configuration key\(s\) \['dataset_path'\]"
    ):
        TrainingConfig.from_dict({"lr": 0.1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrainingConfig.from_dict(["dataset_path"])  # type: ignore[arg-type]


def test_from_dict_round_trips_and_overrides_win() -> None:
    cfg = TrainingConfig("d.npz", class_balance="focal", focal_gamma=1.5, seed=7)
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    over = TrainingConfig.from_dict(cfg.to_dict(), overrides={"seed": 8})
    assert over.seed == 8
    assert over.focal_gamma == 1.5


def test_from_yaml_reads_a_flat_mapping(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    # YAML 1.1 reads 1e-4 (no dot) as a string: the float rule accepts it
    path.write_text(
        "dataset_path: data/offline_dataset.npz\nlr: 1e-4\nhidden_dim: 64\n"
        "class_balance: weighted\ntensorboard: true\n",
        encoding="utf-8",
    )
    cfg = TrainingConfig.from_yaml(path)
    assert (cfg.lr, cfg.hidden_dim, cfg.class_balance, cfg.tensorboard) == (
        1e-4,
        64,
        "weighted",
        True,
    )
    assert TrainingConfig.from_yaml(path, overrides={"hidden_dim": 32}).hidden_dim == 32
    # a YAML file without the dataset, given on the command line
    bare = tmp_path / "bare.yaml"
    bare.write_text("max_epochs: 3\n", encoding="utf-8")
    assert TrainingConfig.from_yaml(bare, overrides={"dataset_path": "x.npz"}).max_epochs == 3


def test_to_dict_survives_yaml(tmp_path: Path) -> None:
    cfg = TrainingConfig("d.npz", lr=3e-4, weight_decay=1e-4, optimizer="adamw")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    assert TrainingConfig.from_yaml(path) == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("dataset_path: d.npz\nbatchsize: 3\n", r"unknown configuration key\(s\) \['batchsize'\]"),
        ("dataset_path: d.npz\nlr: [1, 2]\n", r"lr: got \[1, 2\]; expected a finite number > 0"),
        ("- a\n- b\n", "expected a mapping of field names"),
        ("dataset_path: [unclosed\n", "is not valid YAML"),
    ],
)
def test_from_yaml_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as err:
        TrainingConfig.from_yaml(path)
    assert str(path) in str(err.value)


def test_from_yaml_without_a_file() -> None:
    with pytest.raises(FileNotFoundError, match="no training configuration file"):
        TrainingConfig.from_yaml("/nonexistent/train.yaml")


def test_every_field_has_one_flag_with_its_default_and_help() -> None:
    specs = config_fields()
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(TrainingConfig)]
    flags = {s.name: s.flag for s in specs}
    assert len(set(flags.values())) == len(specs)
    # the guide's spellings
    assert flags["dataset_path"] == "--dataset"
    assert flags["output_dir"] == "--output"
    assert flags["max_epochs"] == "--epochs"
    assert flags["batch_size"] == "--batch-size"
    assert flags["hidden_dim"] == "--hidden-dim"
    assert [s.name for s in specs if s.required] == ["dataset_path"]
    by_name = {s.name: s for s in specs}
    for name, default in DEFAULTS.items():
        assert by_name[name].default == default
        assert default is None or isinstance(default, by_name[name].kind)
        assert by_name[name].help
    assert by_name["optimizer"].choices == OPTIMIZERS
    assert by_name["class_balance"].choices == BALANCE_MODES
    assert by_name["split"].choices == SPLITS


def test_the_listed_choices_are_exactly_what_validation_accepts() -> None:
    for spec in config_fields():
        if spec.choices is None:
            continue
        for choice in spec.choices:
            assert getattr(TrainingConfig("d.npz", **{spec.name: choice}), spec.name) == choice
        with pytest.raises(ConfigError):
            TrainingConfig("d.npz", **{spec.name: "none-of-these"})


def test_a_command_line_built_from_config_fields_makes_the_config() -> None:
    parser = argparse.ArgumentParser()
    for spec in config_fields():
        if spec.kind is bool:
            parser.add_argument(spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(
                spec.flag, dest=spec.name, type=spec.kind, choices=spec.choices, help=spec.help
            )
    args = parser.parse_args(
        shlex.split("--dataset data/x.npz --output models/x --epochs 50 --batch-size 64 --lr 5e-4")
        + shlex.split("--class-balance oversample --split random --tensorboard --no-progress")
    )
    given = {k: v for k, v in vars(args).items() if v is not None}
    cfg = TrainingConfig.from_dict(given)
    assert cfg.to_dict() == {
        **DEFAULTS,
        "dataset_path": "data/x.npz",
        "output_dir": "models/x",
        "max_epochs": 50,
        "batch_size": 64,
        "lr": 0.0005,
        "class_balance": "oversample",
        "split": "random",
        "tensorboard": True,
        "progress": False,
    }


# --- the job configs share the engine (otonom_runtime.config_rules) -----------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, r"^epochs: got 0; expected an integer >= 1$"),
        ({"teacher_rows": -1}, r"^teacher_rows: got -1; expected a finite number >= 0$"),
        ({"teacher_noise": "x"}, r"^teacher_noise: got 'x'; expected a finite number >= 0$"),
        ({"seed": -1}, r"^seed: got -1; expected an integer >= 0$"),
        ({"symbols": ("A", "A")}, r"^symbols: got \('A', 'A'\); expected .*each once$"),
        ({"symbols": "DEMO-BTC"}, r"^symbols: got 'DEMO-BTC'; expected one or more"),
        ({"start": dt.datetime(2020, 1, 1)}, r"^start: got datetime.datetime\(2020, 1, 1, 0, 0\)"),
        ({"start": "2020-01-01"}, r"^start: got '2020-01-01'; expected a datetime.date or null$"),
        ({"database_url": ""}, r"^database_url: got ''; expected a SQLAlchemy URL or None$"),
        ({"run_name": "a/b"}, r"^run_name: got 'a/b'; expected 1-64 letters"),
        ({"from_stage": 0}, r"^from_stage: got 0; expected 1 \.\. 7 \(1=data, "),
        ({"import_csv": (("/nonexistent/x.csv", "X"),)}, r"cannot read /nonexistent/x.csv"),
        ({"import_csv": (("x.csv",),)}, r"^import_csv: got \(\('x.csv',\),\); expected a list"),
        ({"start": dt.date(2021, 1, 1), "end": dt.date(2020, 1, 1)}, r"^start 2021-01-01 is not"),
    ],
)
def test_pipeline_config_is_checked_by_the_same_engine(kwargs: dict[str, Any], match: str) -> None:
    from otonom_trainer.pipeline import PipelineConfig, PipelineError

    with pytest.raises(PipelineError, match=match):
        PipelineConfig(**kwargs)


def test_job_configs_normalise_like_the_training_config() -> None:
    from otonom_trainer.check import CheckConfig
    from otonom_trainer.pipeline import PipelineConfig

    cfg = PipelineConfig(symbols=["DEMO-A"], import_csv=[])  # type: ignore[arg-type]
    assert cfg.symbols == ("DEMO-A",)
    assert cfg.import_csv == ()
    check = CheckConfig(model="m", symbols=("A",), max_p99_latency_ms=5)
    assert type(check.max_p99_latency_ms) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.quiet = True  # type: ignore[misc]


def test_from_yaml_names_the_line_of_the_bad_field_and_refuses_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("dataset_path: d.npz\nmax_epochs: 3\nbatch_size: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        TrainingConfig.from_yaml(path)
    assert str(err.value) == f"{path}:3: batch_size: got 0; expected an integer >= 1"
    path.write_text("dataset_path: d.npz\nlr: 0.1\nlr: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train.yaml:3: lr: duplicate key \(also on line 2\)"):
        TrainingConfig.from_yaml(path)
    # a problem with no line of its own (a flag's override) names the file alone
    path.write_text("dataset_path: d.npz\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        TrainingConfig.from_yaml(path, overrides={"seed": -1})
    assert str(err.value).startswith(f"{path}: seed: got -1; expected")


def test_the_pipeline_trains_with_its_teacher_rows_and_strategy() -> None:
    from otonom_trainer.pipeline import (
        PIPELINE_EPOCHS,
        TEACHER_NOISE,
        TEACHER_ROWS,
        PipelineConfig,
        training_config,
    )

    default = training_config(PipelineConfig(), "d.npz", "out")
    assert (default.teacher_rows, default.teacher_noise) == (TEACHER_ROWS, TEACHER_NOISE)
    assert (default.max_epochs, default.teacher_strategy) == (
        PIPELINE_EPOCHS,
        "strategies/baseline_v1.yaml",
    )
    cfg = PipelineConfig(teacher_rows=0, teacher_noise=0.5, strategy_path="s.yaml", quiet=True)
    tcfg = training_config(cfg, "d.npz", "out")
    assert (tcfg.teacher_rows, tcfg.teacher_noise, tcfg.teacher_strategy) == (0, 0.5, "s.yaml")
    assert (tcfg.dataset_path, tcfg.output_dir, tcfg.progress) == ("d.npz", "out", False)

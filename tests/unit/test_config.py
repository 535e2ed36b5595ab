from pathlib import Path

import pytest

from pipeline.config import build_config, env_overrides, flag_overrides, load_config, parse_scalar
from pipeline.errors import ConfigError


def test_layers_apply_in_order_file_env_flags():
    cfg = build_config(
        {"transfer": {"head_epochs": 10, "seed": 1}, "export": {"model_name": "from_file"}},
        {"TFROLLOUT_TRANSFER__HEAD_EPOCHS": "20", "TFROLLOUT_EXPORT__MODEL_NAME": "from_env"},
        ["transfer.head_epochs=30"],
    )
    assert cfg.transfer.head_epochs == 30  # flag beats env beats file
    assert cfg.export.model_name == "from_env"  # env beats file
    assert cfg.transfer.seed == 1  # file beats default
    assert cfg.transfer.fine_tune_epochs == 20  # default


def test_override_values_are_typed_like_toml():
    assert parse_scalar("5") == 5
    assert parse_scalar("1e-4") == 1e-4
    assert parse_scalar("false") is False
    assert parse_scalar("[1, 2]") == [1, 2]
    assert parse_scalar("fine-tune") == "fine-tune"
    assert parse_scalar('"quoted"') == "quoted"


def test_bad_value_names_key_and_reason():
    with pytest.raises(ConfigError) as err:
        build_config({}, {}, ["transfer.head_epochs=-3"])
    message = str(err.value)
    assert "transfer.head_epochs" in message
    assert "-3" in message


def test_unknown_key_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="transfer.head_epoch"):
        build_config({"transfer": {"head_epoch": 3}})


def test_bad_strategy_lists_the_choices():
    with pytest.raises(ConfigError, match="transfer.strategy.*feature-extraction"):
        build_config({}, {"TFROLLOUT_TRANSFER__STRATEGY": "magic"})


def test_set_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        flag_overrides(["transfer.head_epochs"])


def test_env_ignores_unrelated_variables():
    assert env_overrides({"TFROLLOUT_DEBUG": "1", "HOME": "/root", "TFROLLOUT_RUN__WORKDIR": "/w"}) == {
        "run": {"workdir": "/w"}
    }


def test_missing_and_invalid_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[transfer\nx = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_repository_deploy_toml_is_valid():
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "deploy.toml")
    assert cfg.model.cut_layer is None  # found: the layer feeding the classifier ("features" in the demo)
    assert cfg.data.labels_per_class == 1
    # the same budget for both arms: the from-scratch baseline gets the transfer arm's epochs
    assert cfg.transfer.scratch_epochs == cfg.transfer.head_epochs + cfg.transfer.fine_tune_epochs


def test_a_misspelt_key_says_which_key_was_meant():
    from pipeline.config import build_config

    for wrong, meant in (("transfer.head_epoch=3", "did you mean transfer.head_epochs?"),
                         ("transfer.augment.rotate=0.1", "did you mean transfer.augment.rotation?"),
                         ("tranfer.seed=1", "did you mean transfer?")):
        with pytest.raises(ConfigError) as caught:
            build_config(assignments=[wrong])
        assert meant in str(caught.value) and "Extra inputs" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"transfer.zzz: unknown key \(transfer accepts: strategy, "):
        build_config(assignments=["transfer.zzz=1"])

import pytest

from wit_builder.config import load_config, to_toml
from wit_builder.errors import UserError


def test_defaults_file_and_overrides_layer(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[balance]\nt = 500\n[filter]\nlanguages = ["en", "de"]\n')
    cfg = load_config(path, ["balance.seed=7", "download.honor_robots_tag=false"])
    assert cfg.balance.t == 500 and cfg.balance.seed == 7
    assert cfg.filter.languages == ["en", "de"]
    assert cfg.download.honor_robots_tag is False
    assert load_config().balance.t == 20_000


def test_printed_defaults_load_back_unchanged(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(to_toml(load_config()))
    assert load_config(path) == load_config()


@pytest.mark.parametrize("override, words", [
    ("balance.nope=1", ["balance.nope", "allowed in [balance]", "t, seed"]),
    ("nosection.t=1", ["nosection.t", "sections:"]),
    ("balance.t=many", ["balance.t", "not a valid int"]),
    ("balance.t=0", ["balance.t", "minimum 1"]),
    ("match.normalize=upper", ["match.normalize", "one of: metaclip"]),
    ("balance.t", ["section.key=value"]),
])
def test_bad_keys_and_values_name_the_key(override, words):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value)


def test_unknown_section_in_file_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[baalnce]\nt = 3\n")
    with pytest.raises(UserError, match=r"unknown config section \[baalnce\]"):
        load_config(bad)
    bad.write_text("[balance\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad.write_text('[balance]\nt = "20"\n')
    with pytest.raises(UserError, match="balance.t"):
        load_config(bad)


def test_set_values_are_toml_values():
    cfg = load_config(None, ['filter.languages=["en","de"]', "download.timeout=2.5",
                             "download.retry_failed=true", "balance.t=1_000",
                             "download.allow_networks=127.0.0.0/8,10.0.0.0/8",
                             "match.queries=/data/q.json"])
    assert cfg.filter.languages == ["en", "de"]
    assert cfg.download.timeout == 2.5 and cfg.download.retry_failed is True
    assert cfg.balance.t == 1000 and cfg.match.queries == "/data/q.json"
    assert cfg.download.allow_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    # a list's elements are read as its default's: numbers for AdamW's betas
    assert load_config(None, ["train.betas=0.8, 0.99"]).train.betas == [0.8, 0.99]
    assert load_config(None, ["train.betas=[1, 0.98]"]).train.betas == [1.0, 0.98]


@pytest.mark.parametrize("override, words", [
    ("balance.t=[1, 2]", ["balance.t", "not a valid int"]),
    ("download.retry_failed=maybe", ["download.retry_failed", "not a valid bool"]),
    ("filter.languages={a = 1}", ["filter.languages", "not a valid list"]),
    ("filter.languages=[1, 2]", ["filter.languages", "not a valid list of str"]),
    ("download.allow_networks=[true]", ["download.allow_networks", "not a valid list of str"]),
    ('train.betas=[0.9, "x"]', ["train.betas", "not a valid list of float"]),
    ("train.betas=0.9,high", ["train.betas", "not a valid list of float"]),
])
def test_set_values_of_the_wrong_type_are_refused(override, words):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert all(word in str(err.value) for word in words)


def test_list_elements_in_a_config_file_are_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[filter]\nlanguages = [1]\n")
    with pytest.raises(UserError, match="filter.languages: .* not a valid list of str"):
        load_config(path)


def test_spark_settings_pass_through():
    cfg = load_config(None, ["spark.extra_conf.spark.executor.memory=8g"])
    assert cfg.spark.extra_conf == {"spark.executor.memory": "8g"}
    with pytest.raises(UserError, match="spark.KEY=VALUE"):
        load_config(None, ["spark.extra_conf.executor.memory=8g"])
    # --conf without a value: the error names --conf, not --set
    with pytest.raises(UserError, match=r"^--conf spark.ui.enabled: write --conf spark.KEY=VALUE$"):
        load_config(None, ["spark.extra_conf.spark.ui.enabled"])


def test_run_until_takes_its_choices_from_the_registry():
    from wit_builder import registry

    for name in registry.NAMES:
        assert load_config(None, [f"run.until={name}"]).run.until == name
    with pytest.raises(UserError, match="one of: " + ", ".join(registry.NAMES)):
        load_config(None, ["run.until=train"])


def test_spark_ui_and_log_level_are_the_operators_unless_configured(monkeypatch):
    from wit_builder import spark as spark_module

    seen = {}
    monkeypatch.setattr(spark_module, "get_spark", lambda **kwargs: seen.update(kwargs))
    spark_module.spark_from_config(load_config())
    assert seen["ui"] is True and seen["log_level"] == ""  # Spark's own defaults stand
    spark_module.spark_from_config(load_config(None, ["spark.ui=false", "spark.log_level=WARN"]))
    assert seen["ui"] is False and seen["log_level"] == "WARN"
    with pytest.raises(UserError, match="one of"):
        load_config(None, ["spark.log_level=LOUD"])

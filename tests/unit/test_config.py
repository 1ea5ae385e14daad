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

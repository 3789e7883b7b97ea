import pytest

from beatbus.config import Settings, load_settings, redact_url
from beatbus.errors import ConfigError


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    cfg = tmp_path / "beatbus.toml"
    cfg.write_text('source = "from-file"\nbackend = "beatnet"\nhop = 400\nblock_ms = 300\n')
    env = {"BEATBUS_SOURCE": "from-env", "BEATBUS_HOP": "320", "REDIS_URL": "redis://h:1/0"}
    s = load_settings({"source": "from-flag", "backend": None}, config_file=cfg, env=env)
    assert s.source == "from-flag"          # flag beats env and file
    assert s.hop == 320                     # env beats file (and is converted from a string)
    assert s.backend == "beatnet"           # file beats default; a None flag means "not given"
    assert s.block_ms == 300
    assert s.sr == Settings().sr            # default
    assert s.redis_url == "redis://h:1/0"


def test_config_file_from_env_and_beatbus_table(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[beatbus]\nlog_level = "debug"\n')
    assert load_settings({}, env={"BEATBUS_CONFIG": str(cfg)}).log_level == "debug"


@pytest.mark.parametrize("flags, needle", [
    ({"hop": 5}, "hop"),
    ({"block_ms": 5000}, "block_ms"),
    ({"backend": "Magic Backend!"}, "backend"),
    ({"source": "bad name"}, "source"),
    ({"metrics_addr": "bogus"}, "metrics_addr"),
])
def test_bad_values_name_the_key(flags, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(flags, env={})


def test_unknown_file_key_rejected(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("sorce = 'typo'\n")
    with pytest.raises(ConfigError, match="sorce"):
        load_settings({}, config_file=cfg, env={})


def test_unknown_tables_and_keys_in_two_places_are_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('source = "s"\n[clokc]\nosc = ["127.0.0.1:9000"]\n')
    with pytest.raises(ConfigError, match=r"unknown table \[clokc\] \(tables: \[beatbus\], \[api\], \[clock\]"):
        load_settings({}, config_file=cfg, env={})
    cfg.write_text('source = "flat"\n[beatbus]\nlog_level = "debug"\n')
    with pytest.raises(ConfigError, match=r"source outside the \[beatbus\] table"):
        load_settings({}, config_file=cfg, env={})
    cfg.write_text('source = "flat"\n[led]\npixels = 30\n')       # a stage's table beside flat core keys
    assert load_settings({}, config_file=cfg, env={}).source == "flat"


@pytest.mark.parametrize("where, needle", [
    ({"env": {"BEATBUS_BLOCK_MS": "abc"}}, "(BEATBUS_BLOCK_MS)"),
    ({"flags": {"block_ms": "abc"}}, "(--block-ms)"),
    ({"file": "block_ms = 'abc'\n"}, "(config file "),
])
def test_a_refused_value_says_where_it_came_from(tmp_path, where, needle):
    cfg = None
    if "file" in where:
        cfg = tmp_path / "c.toml"
        cfg.write_text(where["file"])
    with pytest.raises(ConfigError) as exc:
        load_settings(where.get("flags", {}), config_file=cfg, env=where.get("env", {}))
    assert str(exc.value).startswith(f"invalid configuration {needle}") and "block_ms" in str(exc.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, config_file=tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config_file=bad, env={})


def test_env_garbage_is_a_config_error():
    with pytest.raises(ConfigError, match="lease_ttl"):
        load_settings({}, env={"BEATBUS_LEASE_TTL": "soon"})


def test_setting_keys_are_snake_case_and_documented():
    from beatbus.config import DESCRIPTIONS

    for key in Settings.__struct_fields__:
        assert key == key.lower() and " " not in key
        assert key in DESCRIPTIONS and DESCRIPTIONS[key]


def test_redact_url_hides_password():
    assert redact_url("redis://user:s3cret@host:6380/0") == "redis://user:***@host:6380/0"
    assert "s3cret" not in redact_url("rediss://:s3cret@h/0")
    assert redact_url(None) == "<embedded>"

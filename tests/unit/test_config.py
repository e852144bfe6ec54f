from pathlib import Path

import pytest

from streamguard.config import load_config, parse_stream_arg
from streamguard.errors import ConfigError
from tests.support import REPO



def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_and_matches_defaults():
    assert load_config(REPO / "configs" / "streamguard.yaml", environ={}) == load_config(environ={})


def test_yaml_values_are_applied(tmp_path):
    cfg = load_config(write(tmp_path, "scoring: {threshold: 0.7}\nstreams: [{name: a, url: x.mp4}]"), environ={})
    assert cfg.scoring.threshold == 0.7
    assert cfg.streams[0].name == "a"


@pytest.mark.parametrize(
    "text, field",
    [
        ("scoring: {threshold: 1.5}", "scoring.threshold"),
        ("scoring: {window_s: -1}", "scoring.window_s"),
        ("ingest: {analysis_fps: fast}", "ingest.analysis_fps"),
        ("scoring: {treshold: 0.5}", "scoring.treshold"),
        ("detector: {model: huge}", "detector.model"),
        ("streams: [{name: 'bad name', url: x}]", "streams.0.name"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError, match=rf"invalid value for '{field}'"):
        load_config(write(tmp_path, text), environ={})


def test_duplicate_stream_names_rejected(tmp_path):
    with pytest.raises(ConfigError, match="duplicate stream names: a"):
        load_config(write(tmp_path, "streams: [{name: a, url: x}, {name: a, url: y}]"), environ={})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "scoring: {threshold: [}"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2"))


def test_precedence_defaults_file_env_flags(tmp_path):
    path = write(tmp_path, "redis: {url: 'redis://file:1/0'}\nscoring: {threshold: 0.6}")
    assert load_config(path, environ={}).redis.url == "redis://file:1/0"
    env = {"STREAMGUARD_REDIS_URL": "redis://env:2/0", "STREAMGUARD_THRESHOLD": "0.3"}
    cfg = load_config(path, environ=env)
    assert (cfg.redis.url, cfg.scoring.threshold) == ("redis://env:2/0", 0.3)
    cfg = load_config(path, {"redis.url": "redis://flag:3/0"}, environ=env)
    assert cfg.redis.url == "redis://flag:3/0"


def test_bad_env_value_names_field():
    with pytest.raises(ConfigError, match="scoring.threshold"):
        load_config(environ={"STREAMGUARD_THRESHOLD": "high"})


def test_stream_arg():
    s = parse_stream_arg("cam1=rtsp://u:p@h:554/x?a=b")
    assert (s.name, s.url) == ("cam1", "rtsp://u:p@h:554/x?a=b")
    for bad in ("cam1", "=rtsp://x", "cam1="):
        with pytest.raises(ConfigError, match="NAME=URL"):
            parse_stream_arg(bad)
    with pytest.raises(ConfigError, match="streams|name"):
        parse_stream_arg("bad name=x")

"""The flag<->key table: every pcedge run flag has its key; the flags alone, or typed beside a file, build the RunConfig."""

from __future__ import annotations

import logging
import typing

import pytest
from pydantic import BaseModel

from pcedge.cli import build_parser
from pcedge.cli.config import run_parser
from pcedge.config.flags import FLAGS, SECTION_FLAGS, from_args, run_config_from_args
from pcedge.config.typed import TYPED, add_config_option
from pcedge.config.models import RunConfig
from pcedge.errors import ConfigError, ConfigFileError, InternalError

NOT_RUN_FLAGS = {"help", "config", "quiet", "verbose", "debug"}


def parse(*argv: str):
    return run_parser().parse_args(list(argv))


def config_of(*argv: str) -> RunConfig:
    return run_config_from_args(parse(*argv))


def model_default(path: tuple[str, ...]):
    """The default the models give the key at ``path`` (sections that may be left out: their own model's)."""
    annotation: typing.Any = RunConfig
    for part in path:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Union or str(typing.get_origin(annotation)) == "<class 'types.UnionType'>":
            annotation = members[0]
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (path, annotation)
        field = annotation.model_fields[part]
        annotation = field.annotation
    return field.get_default(call_default_factory=True)


def test_the_table_has_every_run_flag_once():
    parser = run_parser()
    flags = {a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest not in NOT_RUN_FLAGS}
    assert len(flags) == 60
    assert sorted(f.flag for f in FLAGS) == sorted(flags)
    assert all(parser._option_string_actions[f.flag].dest == f.dest for f in FLAGS)


def test_every_flag_default_is_its_keys_default():
    """So a flag left out and a key left out mean the same: the flags alone build what pcedge run always ran."""
    parser = run_parser()
    checked = 0
    for entry in FLAGS:
        if entry.special and entry.flag not in ("--output", "--web-host"):
            continue  # the cameras and the secrets: built from several flags (and the environment)
        default = parser._option_string_actions[entry.flag].default
        if default is None and entry.flag in ("--model", *SECTION_FLAGS.values()):
            continue  # required keys: no default on either side
        assert entry.convert(default) == model_default(entry.path), entry.flag
        checked += 1
    assert checked == 49


def test_sections_are_made_by_their_flag():
    for section, flag in SECTION_FLAGS.items():
        model = typing.get_args(RunConfig.model_fields[section].annotation)[0]
        required = [name for name, f in model.model_fields.items() if f.is_required()]
        assert [f.key for f in FLAGS if f.flag == flag] == [f"{section}.{required[0]}"]


def test_the_flags_alone_build_the_run_config(model_file):
    config = config_of("--model", model_file, "--source", "door=rtsp://10.0.0.5/s1", "--source", "clip.mp4", "--fps-limit", "5",
                       "--no-mask-overlay", "--output", "rec/", "--mqtt", "mqtt://broker.lan", "--mqtt-prefix", "site",
                       "--triton-header", "Authorization=Bearer x", "-v")
    assert list(config.cameras) == ["door", "clip"] and config.cameras["clip"].source == "clip.mp4"
    assert (config.defaults.fps_limit, config.defaults.show_masks, config.defaults.output) == (5.0, False, "rec/")
    assert config.mqtt.url == "mqtt://broker.lan" and config.mqtt.prefix == "site"
    assert config.model.triton.headers["Authorization"].get_secret_value() == "Bearer x"
    assert config.logging.level == "verbose" and config.model.path == model_file


def test_without_a_file_model_and_source_are_needed(model_file):
    with pytest.raises(ConfigError, match="needs --model MODEL and --source URI, or --config FILE"):
        config_of("--model", model_file)


def test_flag_errors_name_the_flag(model_file):
    with pytest.raises(ConfigFileError) as caught:
        config_of("--model", model_file, "--source", "x.mp4", "--fps-limit", "-1", "--mqtt-prefix", "p", "--web-host", "box",
                  "--codec", "H264X")
    assert str(caught.value).startswith("the command line: 4 errors")
    messages = {i.path: i.message for i in caught.value.issues}
    assert messages["defaults.fps_limit"].startswith("--fps-limit: Input should be greater than or equal to 0")
    assert messages["mqtt.prefix"] == "--mqtt-prefix sets mqtt.prefix: give --mqtt too"
    assert messages["web.hosts"] == "--web-host guards --web and --metrics: give one of them"
    assert messages["defaults.codec"].startswith("--codec: 'H264X': a codec is a 4-character FOURCC")


def test_two_sources_with_one_name_are_refused(model_file):
    for names in (("a=x.mp4", "a=y.mp4"), ("Front Door=x.mp4", "front_door=y.mp4")):
        with pytest.raises(ConfigFileError, match="would have the same name|two sources are named"):
            config_of("--model", model_file, *[t for n in names for t in ("--source", n)])


def test_outputs_once_for_all_or_once_per_source(model_file):
    two = ("--model", model_file, "--source", "a=a.mp4", "--source", "b=b.mp4")
    per = config_of(*two, "--output", "a.out.mp4", "--output", "b.out.mp4")
    assert (per.cameras["a"].output, per.cameras["b"].output, per.defaults.output) == ("a.out.mp4", "b.out.mp4", None)
    assert config_of(*two, "--output", "rec/").defaults.output == "rec/"
    with pytest.raises(ConfigFileError, match="2 --source and 3 --output"):
        config_of(*two, "--output", "1", "--output", "2", "--output", "3")


# ------------------------------------------------------------------------------------------------ secrets
def test_flag_secrets_are_read_as_before(model_file, credentials, monkeypatch, caplog):
    credentials("mqtt_password", "broker-pw")
    monkeypatch.setenv("PCEDGE_WEB_TOKEN", "env-token")
    with caplog.at_level(logging.WARNING, logger="pcedge"):
        result = from_args(parse("--model", model_file, "--source", "x.mp4", "--mqtt", "mqtt://u:inline@broker",
                                 "--mqtt-password-file", "mqtt_password", "--webhook", "https://h.example/a",
                                 "--webhook-secret", "typed", "--metrics", "0.0.0.0:9108"))
    config = result.config
    assert config.mqtt.password.get_secret_value() == "broker-pw"
    assert config.webhooks[0].secret.get_secret_value() == "typed"
    assert config.metrics.token.get_secret_value() == "env-token"  # no web view: the token guards /metrics
    assert result.secret_files == {("mqtt", "password"): "mqtt_password"}
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("--webhook-secret on the command line is visible" in w for w in warnings) == 1
    assert sum("a password in --mqtt's URL on the command line is visible" in w for w in warnings) == 1


def test_a_secret_flag_without_its_sink_is_refused(model_file, credentials):
    credentials("secret", "x")
    for flags, words in ((("--webhook-secret-file", "secret"), "--webhook-secret-file signs webhook bodies: give --webhook"),
                         (("--mqtt-password-file", "secret"), "--mqtt-password-file sets mqtt.password: give --mqtt too"),
                         (("--web-token", "t"), "--web-token guards --web and --metrics")):
        with pytest.raises(ConfigFileError, match=words):
            config_of("--model", model_file, "--source", "x.mp4", *flags)


def test_an_unreadable_secret_file_names_the_flag(model_file, credentials):
    with pytest.raises(ConfigFileError, match=r"--web-token-file absent: no such secret"):
        config_of("--model", model_file, "--source", "x.mp4", "--web", "8080", "--web-token-file", "absent")


# ------------------------------------------------------------------------------------------------ beside a file
SITE = """\
model: {path: lite0.onnx}
defaults: {fps_limit: 5, alarm: 2/4}
cameras:
  door: {source: rtsp://10.0.0.5/s1, fps_limit: 1}
  yard: {source: yard.mp4}
mqtt: {url: mqtt://broker.lan}
"""


def test_typed_flags_override_their_keys_and_say_so_once(write, caplog):
    site = write(SITE)
    with caplog.at_level(logging.INFO, logger="pcedge"):
        config = config_of("--config", str(site), "--alarm", "3/5", "--fps", "2", "--mqtt-prefix", "site")
    assert config.defaults.alarm == "3/5"  # typed, though it is the flag's default: it overrides the file's 2/4
    assert config.defaults.fps_limit == 2.0 and config.camera_settings("door").fps_limit == 1.0
    assert config.mqtt.prefix == "site" and config.defaults.reconnect == 30.0
    said = [r.getMessage() for r in caplog.records if "overrides" in r.getMessage()]
    assert sorted(said) == [f"--alarm overrides defaults.alarm from {site}",
                    f"--fps-limit overrides defaults.fps_limit from {site} (cameras door keep their own fps_limit)",
                    f"--mqtt-prefix overrides mqtt.prefix from {site}"]


def test_flags_left_out_change_nothing(write):
    site = write(SITE)
    from pcedge.config.loader import load_config

    assert config_of("--config", str(site)) == load_config(site)


def test_sources_beside_a_file_add_cameras(write):
    site = write(SITE)
    config = config_of("--config", str(site), "--source", "gate=rtsp://10.0.0.7/s1", "--output", "rec/")
    assert list(config.cameras) == ["door", "yard", "gate"] and config.defaults.output == "rec/"
    with pytest.raises(ConfigFileError) as caught:
        config_of("--config", str(site), "--source", "door=rtsp://admin:pw@10.0.0.9/s1")
    issue, = caught.value.issues
    assert issue.path == "cameras.door" and "already has a camera 'door' (line 4)" in issue.message
    assert "pw" not in issue.message
    with pytest.raises(ConfigFileError, match="'yard' and 'Yard' would have the same name"):
        config_of("--config", str(site), "--source", "Yard=x.mp4")


def test_a_file_reads_only_the_variables_it_names(write, monkeypatch, caplog):
    monkeypatch.setenv("PCEDGE_MQTT_PASSWORD", "from-env")
    with caplog.at_level(logging.WARNING, logger="pcedge"):
        config = config_of("--config", str(write(SITE)))
    assert config.mqtt.password is None
    assert any("$PCEDGE_MQTT_PASSWORD is set, but" in r.getMessage() for r in caplog.records)


def test_the_file_beside_flags_is_validated_with_its_lines(write):
    site = write(SITE.replace("alarm: 2/4", "alarm: 9/4"))
    with pytest.raises(ConfigFileError) as caught:
        config_of("--config", str(site), "--fps-limit", "-2")
    assert [(i.path, i.line) for i in caught.value.issues] == [("defaults.fps_limit", None), ("defaults.alarm", 2)]
    assert caught.value.issues[0].message.startswith("--fps-limit: ")


def test_pcedge_run_parser_records_typed_flags_through_the_subcommand(write):
    parser = build_parser()
    run = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["run"]
    if "--config" not in run._option_string_actions:
        add_config_option(run)
    args = parser.parse_args(["-q", "run", "--config", str(write(SITE)), "--fps-limit", "0", "--loop"])
    assert getattr(args, TYPED) >= {"config", "fps_limit", "loop"} and "alarm" not in getattr(args, TYPED)
    config = run_config_from_args(args)
    assert (config.defaults.fps_limit, config.defaults.loop, config.logging.level) == (0.0, True, "quiet")


def test_args_from_an_unprepared_parser_are_refused():
    import argparse

    with pytest.raises(InternalError, match="add_config_option"):
        run_config_from_args(argparse.Namespace(config=None))

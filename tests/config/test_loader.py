"""load_config on real files: every error kind with its dotted path and line, all at once; the environment, secrets,
and a file that is still being written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pcedge.config.loader import load_config, read_settled
from pcedge.errors import ConfigError, ConfigFileError, ConfigIssue

GOOD = """\
model:
  path: lite0.onnx
defaults:
  fps_limit: 5
cameras:
  door:
    source: rtsp://10.0.0.5/s1
    alarm: 2/4
    regions:
      sign: {box: [0.25, 0.1, 0.5, 0.3]}
      handle:
        box: [100, 200, 64, 64]
  yard:
    source: yard.mp4
"""


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    return caught.value.issues


def only_issue(path: Path) -> ConfigIssue:
    issues = issues_of(path)
    assert len(issues) == 1, issues
    return issues[0]


def test_a_good_file_is_its_description(write):
    config = load_config(write(GOOD))
    assert config.stream_names() == ["door/sign", "door/handle", "yard"]
    assert config.camera_settings("door").alarm == "2/4" and config.camera_settings("door").fps_limit == 5.0
    assert config.camera_settings("yard").alarm == "3/5"
    assert config.cameras["door"].regions["handle"].box == [100, 200, 64, 64]


BAD = [  # (text, path, line, words in the message)
    ("model: {path: m.onnx\ncameras: {}\n", "", 2, "YAML syntax"),
    ("model: {path: m.onnx}\ndefaults:\n  fps_limt: 5\ncameras: {a: {source: x}}\n", "defaults.fps_limt", 3,
     "did you mean fps_limit"),
    ("model: {path: m.onnx}\ndefaults:\n  fps_limit: fast\ncameras: {a: {source: x}}\n", "defaults.fps_limit", 3,
     "valid number, unable to parse string as a number (got 'fast')"),
    ("model: {path: m.onnx}\ncameras:\n  door:\n    source: x\n    regions:\n      sign:\n        box: [0, 0, 0, 10]\n",
     "cameras.door.regions.sign.box", 7, "width and height > 0"),
    ("model: {path: m.onnx}\ncameras:\n  door:\n    source: x\n    regions:\n      sign: {box: [0, 0, 10]}\n",
     "cameras.door.regions.sign.box", 6, "at least 4"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: x}\n  yard: {source: y}\n  door: {source: z}\n", "cameras.door", 5,
     "given twice (first on line 3)"),
    ("model: {path: m.onnx}\ncameras:\n  Front Door: {source: x}\n  front_door: {source: y}\n", "cameras.front_door", 4,
     "'Front Door' and 'front_door' would have the same name 'front_door'"),
    ("model: {path: m.onnx}\ncameras:\n  door_sign: {source: x}\n  door:\n    source: y\n    regions:\n"
     "      sign: {box: [0, 0, 1, 1]}\n", "cameras.door.regions.sign", 7, "'door_sign' and 'door/sign'"),
    ("model: {path: m.onnx}\ncameras:\n  bad/name: {source: x}\n", "cameras.bad/name", 3, "is not a name"),
    ("model: {path: m.onnx}\ncameras:\n  door:\n    enabled: true\n", "cameras.door.source", 3, "required, and missing"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: x}\nmqtt:\n  url: http://broker\n", "mqtt.url", 5, "use mqtt://"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: x}\nweb:\n  listen: 99999\n", "web.listen", 5, "0 to 65535"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: x, enabled: false}\n", "", None, "no camera is enabled"),
    ("- model\n- cameras\n", "", 1, "must be a mapping of sections"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: \"x\x01\"}\n", "", 3, "the character U+0001 is not allowed"),
    ("model: {path: m.onnx}\n---\ncameras: {}\n", "", 2, "single document"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: !env DOOR}\n", "cameras.door.source", 3, "tag !env is not allowed"),
    ("model: {path: m.onnx}\ncameras:\n  door: {source: x}\ndefaults:\n  alarm: 2/4\n  alarm: 3/5\n", "defaults.alarm", 6,
     "given twice"),
]


@pytest.mark.parametrize("text,path,line,words", BAD, ids=[b[1] or b[3].split()[0] for b in BAD])
def test_each_error_names_its_key_and_line(write, text, path, line, words):
    issue = only_issue(write(text))
    assert (issue.path, issue.line) == (path, line)
    assert words in issue.message


def test_every_error_is_reported_at_once_in_line_order(write, monkeypatch):
    path = write("""\
        model:
          path: m.onnx
          backend: fastest
        defaults:
          fps_limt: 5
        cameras:
          door:
            source: rtsp://admin:${PCEDGE_DOOR_PASSWORD}@10.0.0.5/s1
            regions:
              sign: {box: [0, 0, 0, 0.5]}
          yard: {source: y, fps_limit: -1}
          yard: {source: z}
        """)
    issues = issues_of(path)
    assert [(i.path, i.line) for i in issues] == [
        ("model.backend", 3), ("defaults.fps_limt", 5), ("cameras.door.source", 8), ("cameras.door.regions.sign.box", 10),
        ("cameras.yard", 12)]
    assert "${PCEDGE_DOOR_PASSWORD} is not set" in issues[2].message
    report = str(ConfigFileError(str(path), issues))
    assert report.splitlines()[0] == f"{path}: 5 errors; nothing was applied"
    assert f"  {path}:10: cameras.door.regions.sign.box: " in report


def test_a_python_tag_never_runs(write, tmp_path):
    marker = tmp_path / "ran"
    issue = only_issue(write(f"model: !!python/object/apply:os.system ['touch {marker}']\ncameras: {{a: {{source: x}}}}\n"))
    assert issue.path == "model" and "not allowed" in issue.message
    assert not marker.exists()


def test_aliases_cannot_expand_without_bound(write):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    issue = only_issue(write("\n".join(lines) + "\n"))
    assert "more than 100000 values" in issue.message


def test_merge_keys_share_settings_and_own_keys_win(write):
    config = load_config(write("""\
        model: {path: m.onnx}
        cameras:
          door: &camera {source: a.mp4, fps_limit: 2, alarm: 2/4}
          yard:
            <<: *camera
            source: b.mp4
        """))
    assert config.cameras["yard"].source == "b.mp4" and config.cameras["yard"].fps_limit == 2


def test_yaml_words_are_names_where_names_belong(write):
    config = load_config(write("model: {path: m.onnx}\ncameras:\n  no: {source: x}\n  1: {source: '0'}\n"))
    assert list(config.cameras) == ["no", "1"]


def test_numbers_where_text_belongs_are_text(write):
    config = load_config(write("model: {path: m.onnx, masks: {patch: 32}}\ncameras: {cam: {source: 0}}\nmetrics: {listen: 9108}\n"))
    assert (config.model.masks.patch, config.cameras["cam"].source, config.metrics.listen) == ("32", "0", "9108")


# ------------------------------------------------------------------------------------------------ the environment
def test_variables_come_from_the_environment(write, monkeypatch):
    monkeypatch.setenv("PCEDGE_DOOR_PASSWORD", "s3cret:@/x")
    monkeypatch.setenv("PCEDGE_FPS", "7.5")
    config = load_config(write("""\
        model: {path: "${PCEDGE_MODEL:/opt/lite0.onnx}"}
        defaults: {fps_limit: "${PCEDGE_FPS}", alarm: "${PCEDGE_ALARM:}2/4"}
        cameras:
          door: {source: "rtsp://admin:${PCEDGE_DOOR_PASSWORD}@10.0.0.5/s1", output: "cost $${PCEDGE_NOT_READ}.mp4"}
        """))
    assert config.model.path == "/opt/lite0.onnx"
    assert config.defaults.fps_limit == 7.5 and config.defaults.alarm == "2/4"
    assert config.cameras["door"].source == "rtsp://admin:s3cret:@/x@10.0.0.5/s1"
    assert config.cameras["door"].output == "cost ${PCEDGE_NOT_READ}.mp4"


@pytest.mark.parametrize("value,words", [
    ("${PCEDGE_MISSING}", "${PCEDGE_MISSING} is not set"),
    ("${HOME}", "only PCEDGE_* variables are read"),
    ("${PCEDGE_X", "has no closing"),
    ("${not a name}", "write ${PCEDGE_NAME}"),
])
def test_a_variable_that_cannot_be_read_is_an_error_never_empty(write, value, words):
    issue = only_issue(write(f"model: {{path: m.onnx}}\ncameras:\n  door:\n    source: '{value}'\n"))
    assert (issue.path, issue.line) == ("cameras.door.source", 4) and words in issue.message


def test_a_value_from_the_environment_is_never_echoed(write, monkeypatch):
    monkeypatch.setenv("PCEDGE_FPS", "hunter2")
    issue = only_issue(write("model: {path: m.onnx}\ndefaults: {fps_limit: '${PCEDGE_FPS}'}\ncameras: {a: {source: x}}\n"))
    assert issue.path == "defaults.fps_limit" and "valid number" in issue.message and "hunter2" not in issue.message


# ------------------------------------------------------------------------------------------------ secrets
def test_secrets_from_credentials_files_and_paths(write, credentials, tmp_path):
    credentials("mqtt_password", "broker-pw")
    credentials("door_uri", "rtsp://admin:pw@10.0.0.5/s1")
    (tmp_path / "token.txt").write_text("web-token\n")
    config = load_config(write(f"""\
        model: {{path: m.onnx}}
        cameras:
          door: {{source_file: door_uri}}
        mqtt: {{url: mqtt://pcedge@broker, password: !secret mqtt_password}}
        web: {{listen: 8080, token_file: {tmp_path / 'token.txt'}}}
        """))
    assert config.mqtt.password.get_secret_value() == "broker-pw"
    assert config.web.token.get_secret_value() == "web-token"
    assert config.cameras["door"].source == "rtsp://admin:pw@10.0.0.5/s1"


def test_secret_errors_name_where_pcedge_looked(write, credentials):
    issues = issues_of(write("""\
        model: {path: m.onnx}
        cameras: {door: {source: x}}
        mqtt:
          url: mqtt://broker
          password: !secret absent
        web:
          listen: 8080
          token: abc
          token_file: web_token
        events:
          folder_file: [not, a, name]
        """))
    assert [(i.path, i.line) for i in issues] == [("mqtt.password", 5), ("web.token_file", 9), ("events.folder_file", 11)]
    assert "!secret absent: no such secret (looked in" in issues[0].message and "credentials/absent" in issues[0].message
    assert "token and token_file both given" in issues[1].message
    assert "takes a file path or a credential NAME" in issues[2].message


def test_a_secret_is_never_echoed_in_an_error(write, credentials):
    credentials("rate", "not-a-number-but-a-secret")
    issue = only_issue(write("model: {path: m.onnx}\ndefaults: {rate_file: rate}\ncameras: {a: {source: x}}\n"))
    assert issue.path == "defaults.rate" and "not-a-number-but-a-secret" not in issue.message


@pytest.mark.parametrize("text", ["webhooks: [https://ha.lan/api/webhook/HOOK-SECRET-ID]\n",
                                  "webhooks: https://ha.lan/api/webhook/HOOK-SECRET-ID\n",
                                  "model: {path: m.onnx, triton: {headers: Bearer HOOK-SECRET-ID}}\n"])
def test_a_value_where_a_secret_belongs_below_is_never_echoed(write, text):
    """The wrong shape for a key that holds secrets (a webhook's bare URL, whose path is its secret, where a mapping
    belongs) is reported without the value."""
    model = "" if text.startswith("model") else "model: {path: m.onnx}\n"
    issue = only_issue(write(model + "cameras: {a: {source: x}}\n" + text))
    assert "HOOK-SECRET-ID" not in issue.message and issue.path.split(".")[0] in ("webhooks", "model")


def test_names_ending_in_file_are_names(write):
    config = load_config(write("model: {path: m.onnx}\ncameras:\n  door_file: {source: x}\n"))
    assert list(config.cameras) == ["door_file"]


# ------------------------------------------------------------------------------------------------ the file itself
def test_missing_empty_folder_binary_and_huge_files(tmp_path, write):
    cases = {tmp_path / "absent.yml": "no such file", write(""): "the file is empty", write("# only a comment\n", "c.yml"):
             "the file is empty", tmp_path: "is a folder"}
    binary = tmp_path / "b.yml"
    binary.write_bytes(b"model: {path: m.onnx}\n\xff\xfe\n")
    cases[binary] = "not UTF-8"
    huge = tmp_path / "huge.yml"
    huge.write_bytes(b"#" * (2 << 20))
    cases[huge] = "a configuration is a few kilobytes"
    for path, words in cases.items():
        issue = only_issue(path)
        assert words in issue.message, (path, issue)
    assert only_issue(binary).line == 2


def test_an_unreadable_file_says_so():
    """/proc/self/mem exists and cannot be read from its start (EIO), for root too."""
    assert only_issue(Path("/proc/self/mem")).message == "cannot read it (Input/output error)"


def test_a_half_written_file_is_read_complete(tmp_path):
    """Half the bytes, then the rest 0.1 s later while the loader waits (for the file to stand still 1 s): it reads
    the whole file, never the half."""
    path = tmp_path / "site.yml"
    data = GOOD.encode()
    path.write_bytes(data[: len(data) // 2])
    finish = threading.Timer(0.1, lambda: path.write_bytes(data))
    finish.start()
    try:
        config = load_config(path, settle_s=1.0)
    finally:
        finish.join()
    assert config.stream_names() == ["door/sign", "door/handle", "yard"]


def test_a_file_still_being_appended_to_is_refused(tmp_path):
    path = tmp_path / "site.yml"
    path.write_text("model: {path: m.onnx}\ncameras:\n")
    stop = threading.Event()

    def append() -> None:
        for n in range(200):
            if stop.wait(0.05):
                return
            with open(path, "a") as handle:
                handle.write(f"  cam{n}: {{source: x}}\n")

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with pytest.raises(ConfigFileError, match="still being written"):
            read_settled(path, wait_s=1.0)
    finally:
        stop.set()
        writer.join()


def test_a_file_last_changed_long_ago_has_stood_still(write, tmp_path):
    """Its modification time says so: no need to watch it for settle_s (which here is longer than the wait allowed)."""
    assert read_settled(write(GOOD), settle_s=5.0, wait_s=0.5) == GOOD.encode()
    fresh = tmp_path / "fresh.yml"
    fresh.write_text(GOOD)
    with pytest.raises(ConfigFileError, match="still being written"):
        read_settled(fresh, settle_s=5.0, wait_s=0.5)


def test_config_file_error_is_a_usage_error():
    assert issubclass(ConfigFileError, ConfigError)

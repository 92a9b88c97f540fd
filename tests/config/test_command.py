"""pcedge config check / schema / from-args / init through the real command line (subprocesses, exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from pcedge.config.loader import load_config
from pcedge.config.starter import SINKS_TITLE

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
model: {path: lite0.onnx}
defaults: {fps_limit: 5}
cameras:
  door:
    source: rtsp://admin:${PCEDGE_DOOR_PASSWORD}@10.0.0.5/s1
    regions:
      sign: {box: [0.25, 0.1, 0.5, 0.3]}
  yard: {source: yard.mp4}
web: {listen: 8080, token: !secret web_token}
"""


def pcedge(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PCEDGE_") and k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "pcedge", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**environment, **(env or {})}, timeout=120)


def test_check_a_good_file_shows_what_will_run_without_secrets(write, tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "web_token").write_text("t0ken-value\n")
    env = {"PCEDGE_DOOR_PASSWORD": "pw-value", "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    site = write(GOOD)
    out = pcedge("config", "check", str(site), env=env)
    assert out.returncode == 0, out.stderr
    assert "source: rtsp://admin:**********@10.0.0.5/s1" in out.stdout and "token: '**********'" in out.stdout
    assert out.stdout.rstrip().endswith("# streams (2): door/sign, yard")
    assert "pw-value" not in out.stdout + out.stderr and "t0ken-value" not in out.stdout + out.stderr
    report = json.loads(pcedge("config", "check", "--json", str(site), env=env).stdout)
    assert report["valid"] and report["streams"] == ["door/sign", "yard"] and report["config"]["defaults"] == {"fps_limit": 5.0}
    full = pcedge("config", "check", "--defaults", str(site), env=env).stdout
    assert "reconnect: 30.0" in full and "stall_timeout: 5.0" in full


def test_check_a_bad_file_lists_every_error_and_exits_2(write):
    site = write(GOOD.replace("fps_limit: 5", "fps_limt: 5").replace("0.5, 0.3", "0, 0.3"))
    out = pcedge("config", "check", str(site))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"pcedge config: error: {site}: 4 errors; nothing was applied",
        f"  {site}:2: defaults.fps_limt: unknown key (did you mean fps_limit?)",
        f"  {site}:5: cameras.door.source: ${{PCEDGE_DOOR_PASSWORD}} is not set: set it in pcedge's environment (systemd: "
        "Environment= or EnvironmentFile=), or give a default: ${PCEDGE_DOOR_PASSWORD:default}",
        f"  {site}:7: cameras.door.regions.sign.box: [0.25, 0.1, 0.0, 0.3]: x and y must be >= 0, width and height > 0",
        f"  {site}:9: web.token: !secret web_token: no such secret (looked in /run/secrets/web_token); give a file path, "
        "or a name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=) or /run/secrets",
    ]
    report = json.loads(pcedge("config", "check", "--json", str(site)).stdout)
    assert not report["valid"] and [(e["path"], e["line"]) for e in report["errors"]] == [
        ("defaults.fps_limt", 2), ("cameras.door.source", 5), ("cameras.door.regions.sign.box", 7), ("web.token", 9)]


def test_check_needs_no_opencv(write):
    """A site checks its file on any machine: with OpenCV (and ONNX Runtime) unimportable, check still works."""
    code = ("import sys\nsys.modules['cv2'] = None\nsys.modules['onnxruntime'] = None\nfrom pcedge.cli import main\n"
            f"sys.exit(main(['config', 'check', {str(write(GOOD.replace('${PCEDGE_DOOR_PASSWORD}', 'x').replace('!secret web_token', 'x')))!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "# streams (2): door/sign, yard" in out.stdout


def test_schema_goes_to_a_file(tmp_path):
    out = pcedge("config", "schema", "--out", str(tmp_path / "pcedge.schema.json"))
    assert out.returncode == 0, out.stderr
    schema = json.loads((tmp_path / "pcedge.schema.json").read_text())
    assert schema["title"] == "pcedge run configuration" and "yaml-language-server: $schema=" in out.stderr
    assert json.loads(pcedge("config", "schema").stdout) == schema


def test_from_args_moves_a_command_line_over(tmp_path, model_file):
    argv = ["--model", model_file, "--source", "door=rtsp://admin:pw-value@10.0.0.5/s1", "--source", "yard.mp4",
            "--fps-limit", "5", "--mqtt", "mqtt://pcedge@broker.lan", "--headless"]
    out = pcedge("config", "from-args", "--", *argv, env={"PCEDGE_MQTT_PASSWORD": "broker-value"})
    assert out.returncode == 0, out.stderr
    assert "pw-value" not in out.stdout + out.stderr and "broker-value" not in out.stdout + out.stderr
    assert "set PCEDGE_DOOR_PASSWORD in pcedge's environment (cameras.door.source)" in out.stderr
    site = tmp_path / "site.yml"
    site.write_text(out.stdout)
    os.environ.update(PCEDGE_DOOR_PASSWORD="pw-value", PCEDGE_MQTT_PASSWORD="broker-value")
    try:
        config = load_config(site, settle_s=0)
    finally:
        del os.environ["PCEDGE_DOOR_PASSWORD"], os.environ["PCEDGE_MQTT_PASSWORD"]
    assert config.cameras["door"].source == "rtsp://admin:pw-value@10.0.0.5/s1" and list(config.cameras) == ["door", "yard"]
    assert config.mqtt.password.get_secret_value() == "broker-value" and config.run.headless
    bad = pcedge("config", "from-args", "--", "--model", model_file, "--source", "x.mp4", "--fps-limit", "-1")
    assert bad.returncode == 2 and "defaults.fps_limit: --fps-limit: Input should be greater than or equal to 0" in bad.stderr
    assert pcedge("config", "from-args").returncode == 2


def test_init_writes_a_starter_that_check_accepts(tmp_path):
    site = tmp_path / "site.yml"
    out = pcedge("config", "init", "--camera", "door=rtsp://admin:pw-value@10.0.0.5/s1", "--camera", "clip.mp4",
                 "--camera", "Front Door=0", "--model", "/opt/lite0.onnx", "--out", str(site))
    assert out.returncode == 0, out.stderr
    text = site.read_text()
    assert "pw-value" not in text and "${PCEDGE_DOOR_PASSWORD}" in text and "# regions:" in text and "password_file" in text
    check = pcedge("config", "check", str(site), env={"PCEDGE_DOOR_PASSWORD": "pw-value"})
    assert check.returncode == 0, check.stderr
    assert check.stdout.rstrip().endswith("# streams (3): door, clip, Front Door")
    head, sinks = text.split(SINKS_TITLE)
    uncommented = yaml.safe_load(head + "\n".join(line.removeprefix("# ") for line in sinks.splitlines()))
    assert {"mqtt", "webhooks", "metrics", "web", "events"} <= set(uncommented)  # the sinks' examples are real YAML
    again = pcedge("config", "init", "--camera", "x.mp4", "--out", str(site))
    assert again.returncode == 2 and "exists" in again.stderr and site.read_text() == text
    assert pcedge("config", "init", "--camera", "x.mp4", "--out", str(site), "--force").returncode == 0
    clash = pcedge("config", "init", "--camera", "a=x.mp4", "--camera", "A=y.mp4")
    assert clash.returncode == 2 and "would have the same name" in clash.stderr


def test_every_config_command_has_help_with_examples():
    for argv in (["config"], ["config", "check"], ["config", "schema"], ["config", "from-args"], ["config", "init"]):
        out = pcedge(*argv, "--help")
        assert out.returncode == 0 and "examples:" in out.stdout, argv

"""config_to_yaml: a command line's file equivalent, which loads back to the same RunConfig and holds no secret."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge.cli.config import run_parser
from pcedge.config.flags import from_args
from pcedge.config.loader import load_config
from pcedge.config.models import RunConfig
from pcedge.config.render import MASK, config_to_yaml, render_config
from pcedge.runtime.backends import MODEL_FILE_BACKENDS

from ..conftest import examples

EVERY_FLAG = [  # every flag of pcedge run at least once over the two lists (the -file forms in the second)
    "--backend", "ort", "--patch", "32x16", "--masks-per-axis", "4", "--stride", "8", "--mask-size", "40", "--two-patches",
    "--second-round", "all", "--budget", "3", "--max-batch", "36", "--image-size", "224x320", "--mean", "0.5,0.4,0.3",
    "--std", "0.2,0.2,0.25", "--crop-pct", "0.875", "--interpolation", "bicubic", "--triton-timeout", "10",
    "--triton-in-flight", "4", "--triton-ssl", "--triton-ca", "ca.pem", "--triton-cert", "c.pem", "--triton-key", "k.pem",
    "--triton-header", "Authorization=Bearer t0k3n", "--triton-header", "X-Site=north",
    "--source", "door=rtsp://admin:p@ss:w/rd@10.0.0.5:554/s1", "--source", "yard=rtsp://10.0.0.6/s?token=abcdef",
    "--source", "gate.mp4", "--output", "door.mp4", "--output", "yard.mkv", "--output", "display://0", "--headless",
    "--log", "frames ${HOME}.jsonl", "--json", "summary.json", "--fps-limit", "5", "--max-frames", "100", "--gather-ms", "10",
    "--loop", "--show-undefended", "--no-mask-overlay", "--alarm", "2/4", "--width", "1280", "--height", "720", "--rate", "30",
    "--codec", "MJPG", "--reconnect", "10", "--stall-timeout", "2", "--rtsp-backend", "gstreamer",
    "--mqtt", "mqtts://pcedge:urlpass@broker.lan:8883", "--mqtt-prefix", "site/north", "--mqtt-client-id", "box1",
    "--mqtt-discovery", "--stats-interval", "30", "--webhook", "https://ha.lan/api/webhook/s3cr3t-id",
    "--webhook", "https://other.example/hook", "--webhook-secret", "signing-key", "--metrics", "9108",
    "--web", "0.0.0.0:8080", "--web-token", "web-t0ken", "--web-host", "box.lan", "--web-host", "box",
    "--events", "/var/lib/pcedge/events", "--clip-seconds", "2", "--events-keep", "10", "--events-max-mb", "100", "-vv",
]
FILE_FORMS = [
    "--source", "0", "--mqtt", "mqtt://u@broker", "--mqtt-password-file", "mqtt_password", "--webhook", "https://h.example/a",
    "--webhook-secret-file", "webhook_secret", "--metrics", "0.0.0.0:9108", "--web-token-file", "web_token", "-q",
]
SECRETS = {"mqtt_password": "broker-pw", "webhook_secret": "hmac-key", "web_token": "file-token"}


def round_trip(argv: list[str], tmp_path) -> tuple[RunConfig, str]:
    """The flags' RunConfig, and the YAML written for it, loaded back with its variables set."""
    result = from_args(run_parser().parse_args(argv))
    rendered = render_config(result.config, secret_files=result.secret_files)
    path = tmp_path / "site.yml"
    path.write_text(rendered.text, encoding="utf-8")
    saved = dict(os.environ)
    os.environ.update(rendered.variables)
    try:
        assert load_config(path, settle_s=0) == result.config
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result.config, rendered.text


@pytest.mark.parametrize("flags", [EVERY_FLAG, FILE_FORMS], ids=["values", "files"])
def test_every_flag_survives_the_round_trip(flags, model_file, credentials, tmp_path):
    for name, value in SECRETS.items():
        credentials(name, value)
    config, text = round_trip(["--model", model_file, *flags], tmp_path)
    for secret in ("p@ss:w/rd", "abcdef", "urlpass", "s3cr3t-id", "signing-key", "web-t0ken", "t0k3n", *SECRETS.values()):
        assert secret not in text
    if flags is FILE_FORMS:
        assert "password_file: mqtt_password" in text and "token_file: web_token" in text
        assert config.metrics.token.get_secret_value() == "file-token"
    else:
        assert "rtsp://admin:${PCEDGE_DOOR_PASSWORD}@10.0.0.5:554/s1  # set PCEDGE_DOOR_PASSWORD" in text
        assert "frames $${HOME}.jsonl" in text and config.logging.log == "frames ${HOME}.jsonl"
        assert text.index("  door:") < text.index("  yard:") < text.index("  gate:")


def test_a_triton_model_and_defaults_only(tmp_path):
    config, text = round_trip(["--model", "triton://server:8001/lite0", "--source", "cam=0"], tmp_path)
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["model:", "  path: triton://server:8001/lite0", "cameras:", "  cam:", "    source: '0'"]


SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
SECRET = SAFE_TEXT.map(lambda text: f"sEcReT{text}")  # told apart from every other value in the text
PASSWORD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00?#"), min_size=1, max_size=12)
OPTIONS = {  # flag -> its values (None: a switch)
    "--backend": st.sampled_from(MODEL_FILE_BACKENDS), "--patch": st.sampled_from(["2%", "32", "32x16", "0.5%"]),
    "--masks-per-axis": st.integers(1, 9), "--stride": st.integers(1, 64), "--mask-size": st.integers(1, 64),
    "--two-patches": None, "--second-round": st.sampled_from(["auto", "per-disagreer", "all"]), "--budget": st.integers(0, 9),
    "--image-size": st.sampled_from(["224", "240x320"]), "--crop-pct": st.floats(0.01, 1), "--fps-limit": st.floats(0, 1e3),
    "--alarm": st.sampled_from(["1/1", "3/5", "7/9"]), "--loop": None, "--no-mask-overlay": None, "--headless": None,
    "--log": SAFE_TEXT, "--mqtt-client-id": SAFE_TEXT, "--codec": st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                                                       min_size=4, max_size=4),
    "--web-token": SECRET, "--webhook-secret": SECRET, "--triton-header": st.tuples(st.sampled_from(["A", "B"]), SECRET),
    "--source": st.tuples(st.sampled_from(["door", "Yard 2", "c.3"]), PASSWORD),
    "--reconnect": st.floats(0, 1e6), "--events-keep": st.integers(1, 10**6),
}


@st.composite
def command_lines(draw) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=len(OPTIONS)))
    argv = ["--model", "triton://server:8001/m", "--web", "8080", "--webhook", "https://h.example/x", "--events", "ev",
            "--mqtt", "mqtt://broker"]
    for flag in chosen:
        strategy = OPTIONS[flag]
        value = None if strategy is None else draw(strategy)
        if flag == "--source":
            argv.append(f"--source={value[0]}=rtsp://admin:{value[1]}@10.0.0.5/s1")
        elif flag == "--triton-header":
            argv.append(f"--triton-header={value[0]}={value[1]}")
        else:
            argv.append(flag if value is None else f"{flag}={value}")
    if "--source" not in chosen:
        argv.append("--source=clip.mp4")
    return argv


@settings(max_examples=examples(150), deadline=None)
@given(argv=command_lines())
def test_any_command_line_survives_the_round_trip(argv, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("round")
    config, text = round_trip(argv, tmp_path)
    for secret in (config.web.token, *[hook.secret for hook in config.webhooks],
                   *config.model.triton.headers.values()):
        if secret is not None:
            assert secret.get_secret_value() not in text


def test_masked_shows_no_secret(model_file, credentials):
    for name, value in SECRETS.items():
        credentials(name, value)
    result = from_args(run_parser().parse_args(["--model", model_file, *EVERY_FLAG]))
    text = render_config(result.config, masked=True, defaults=True).text
    for secret in ("p@ss:w/rd", "abcdef", "urlpass", "s3cr3t-id", "signing-key", "web-t0ken", "t0k3n"):
        assert secret not in text
    assert f"source: rtsp://admin:{MASK}@10.0.0.5:554/s1" in text and "url: https://ha.lan/…" in text
    assert "source: rtsp://10.0.0.6/s?…" in text and "fps_limit: 5.0" in text and "reconnect: 10.0" in text
    assert "${" not in text.replace("$${", "")


def test_config_to_yaml_is_the_text_of_render_config(model_file):
    config = from_args(run_parser().parse_args(["--model", model_file, "--source", "x.mp4", "--fps-limit", "3"])).config
    assert config_to_yaml(config) == render_config(config).text and "fps_limit: 3.0" in config_to_yaml(config)

"""Secrets come from files, systemd's credentials folder, /run/secrets or the environment; one that cannot be read is
an error naming where pcedge looked, never an empty secret; one typed on the command line works and is warned about
once."""

from __future__ import annotations

import logging

import pytest

from pcedge.errors import ConfigError
from pcedge.util import secrets
from pcedge.util.secrets import read_secret, resolve_secret


@pytest.fixture
def places(tmp_path, monkeypatch):
    credentials, run_secrets = tmp_path / "credentials", tmp_path / "run-secrets"
    credentials.mkdir()
    run_secrets.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setattr(secrets, "RUN_SECRETS", run_secrets)
    monkeypatch.setattr(secrets, "_warned", set())
    return credentials, run_secrets


def test_a_name_is_looked_up_in_the_credentials_folder_then_run_secrets(places, tmp_path):
    credentials, run_secrets = places
    (run_secrets / "token").write_text("from-run-secrets\n")
    assert read_secret("token", what="--web-token-file") == "from-run-secrets"
    (credentials / "token").write_text("from-systemd\r\n")
    assert read_secret("token", what="--web-token-file") == "from-systemd"
    (tmp_path / "my.token").write_text("from-a-path")
    assert read_secret(str(tmp_path / "my.token"), what="--web-token-file") == "from-a-path"


@pytest.mark.parametrize("content,words", [(None, "no such secret \\(looked in .*credentials/token, .*run-secrets/token\\)"),
                                           ("\n", ".*credentials/token is empty")])
def test_a_secret_that_cannot_be_read_is_an_error_naming_where(places, content, words):
    if content is not None:
        (places[0] / "token").write_text(content)
    with pytest.raises(ConfigError, match="--web-token-file token: " + words):
        read_secret("token", what="--web-token-file")


def test_the_flag_the_file_or_the_environment_and_a_warning_for_the_command_line(places, monkeypatch, caplog):
    (places[0] / "hook").write_text("s3cret")
    assert resolve_secret(value=None, file="hook", env="PCEDGE_WEBHOOK_SECRET", flag="--webhook-secret") == "s3cret"
    monkeypatch.setenv("PCEDGE_WEBHOOK_SECRET", "from-env")
    assert resolve_secret(value=None, file=None, env="PCEDGE_WEBHOOK_SECRET", flag="--webhook-secret") == "from-env"
    with caplog.at_level(logging.WARNING, logger="pcedge"):
        for _ in range(3):
            assert resolve_secret(value="typed", file=None, env="PCEDGE_WEBHOOK_SECRET", flag="--webhook-secret") == "typed"
    warnings = [r.getMessage() for r in caplog.records if "visible to every user" in r.getMessage()]
    assert len(warnings) == 1 and "--webhook-secret-file" in warnings[0] and "typed" not in warnings[0]
    with pytest.raises(ConfigError, match="--webhook-secret and --webhook-secret-file both given"):
        resolve_secret(value="typed", file="hook", env="PCEDGE_WEBHOOK_SECRET", flag="--webhook-secret")

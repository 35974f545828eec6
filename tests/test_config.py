"""Each kind of configuration mistake is one line naming the file, the key and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app import config as cfg
from firmware_app.errors import ConfigError

GOOD = """\
[account]
registrar = "pbx.example:5070"
user = "1000"
"""


def write(tmp_path: Path, text: str, password: str | None = "s3cret", mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    if password is not None:
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(f'password = "{password}"\n')
        secrets.chmod(mode)
    return path


def error_of(tmp_path: Path, text: str, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, text, **kw))
    return str(e.value)


def test_good_config_loads_with_defaults(tmp_path):
    c = cfg.load(write(tmp_path, GOOD))
    assert c.account.user == "1000"
    assert c.domain == "pbx.example:5070"
    assert c.account.transport == "udp"
    assert c.account.reject_code == 486
    assert c.password == "s3cret"
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[account]\nregistrar = "x"\n', "config.toml: account.user: is required"),
        ('[account]\nregistrar = "x"\nuser = "1"\ntransport = "sctp"\n',
         "account.transport: expected one of 'udp', 'tcp', 'tls', got 'sctp'"),
        ('[account]\nregistrar = "x"\nuser = "1"\nlocal_port = "5060"\n',
         "account.local_port: expected an integer, got a string"),
        ('[account]\nregistrar = "x"\nuser = "1"\nlocal_port = 70000\n', "account.local_port: expected an integer <= 65535"),
        ('[account]\nregistrar = "x"\nuser = "1"\nusr = "1"\n', "account.usr: unknown key (expected one of: registrar, user"),
        ('[account]\nregistrar = "x"\nuser = "1"\npassword = "p"\n', "account.password: unknown key"),
        ('[account]\nregistrar = "x"\nuser = "1"\n[logging]\nlevel = "loud"\n',
         "logging.level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'"),
        ('[logging]\nlevel = "info"\n', "config.toml: account: required table is missing"),
        ('[account\nregistrar = "x"\n', "config.toml: not valid TOML: "),
        ('[account]\nregistrar = "x"\nuser = "1"\n[plugins]\ndisable = "gpio"\n',
         "plugins.disable: expected a list, got a string"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert expected in message
    assert message.startswith(str(tmp_path / "config.toml"))
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config.toml: file not found"):
        cfg.load(tmp_path / "config.toml")


def test_missing_secrets_file(tmp_path):
    assert "secrets.toml: secrets file not found" in error_of(tmp_path, GOOD, password=None)


def test_secrets_readable_by_others_is_refused(tmp_path):
    assert "secrets.toml: readable by others (mode 0644)" in error_of(tmp_path, GOOD, mode=0o644)


def test_secrets_that_are_not_toml_are_explained_like_the_configuration(tmp_path):
    path = write(tmp_path, GOOD)
    (tmp_path / "secrets.toml").write_text('password = "unterminated\n')
    with pytest.raises(ConfigError) as e:
        cfg.load(path)
    assert str(e.value).startswith(f"{tmp_path / 'secrets.toml'}: not valid TOML: "), str(e.value)


def test_empty_password(tmp_path):
    assert "secrets.toml: password: expected a non-empty string" in error_of(tmp_path, GOOD, password="")


def test_systemd_credential_wins_over_the_file(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / cfg.CREDENTIAL_NAME).write_text('password = "from-credential"\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert cfg.load(write(tmp_path, GOOD, password=None)).password == "from-credential"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("895", "sip:895@pbx.example"),
        ("alice@other.example", "sip:alice@other.example"),
        ("sip:100@pbx.example;transport=tcp", "sip:100@pbx.example;transport=tcp"),
    ],
)
def test_complete_uri(target, expected):
    assert cfg.complete_uri(target, "pbx.example") == expected


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_app.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CREDENTIALS_DIRECTORY": ""},
    )


def test_check_config_command_ok(tmp_path):
    result = run_check(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "softphone_transfer" in result.stdout


def test_check_config_command_reports_one_line_and_exit_2(tmp_path):
    result = run_check(write(tmp_path, GOOD + "[buttons.default.in_call]\ndouble = \"transfr\"\n"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "config.toml: buttons.default.in_call.double: unknown action 'transfr'" in lines[0]


def test_unknown_section_is_reported(tmp_path):
    result = run_check(write(tmp_path, GOOD + "[transfr]\ndefault = \"x\"\n"))
    assert result.returncode == 2
    assert "config.toml: transfr: unknown section" in result.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[transfer.targets.a]\nuri = "http://x"\n', "transfer.targets.a.uri: expected a SIP URI"),
        ('[transfer.pools.p]\ntargets = []\n', "transfer.pools.p.targets: expected at least one target"),
        ('[transfer.targets.a]\nuri = "1"\n[transfer.pools.p]\ntargets = ["a", "bob"]\n',
         "transfer.pools.p.targets[1]: unknown target 'bob'"),
        ('[transfer.targets.a]\nuri = "1"\n[transfer.pools.a]\ntargets = ["a"]\n',
         "transfer.pools.a: a target has the same name"),
        ('[transfer]\ndefault = "nobody"\n', "transfer.default: unknown target or pool 'nobody'"),
        ('[transfer.pools.p]\ntargets = ["sip:a@b"]\nstrategy = "best"\n',
         "transfer.pools.p.strategy: expected one of 'ordered', 'round_robin', 'random', 'available', got 'best'"),
        ('[transfer]\nfinal_timeout = -1\n', "transfer.final_timeout: expected a number > 0"),
    ],
)
def test_transfer_config_mistakes(tmp_path, text, expected):
    result = run_check(write(tmp_path, GOOD + text))
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr

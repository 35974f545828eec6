"""The telemetry table's mistakes, each one line naming the key, and the secret it needs."""

from __future__ import annotations

import pytest

from firmware_app import app
from firmware_app.errors import ConfigError
from tests.inputs.conftest import write_config


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ("[telemetry]\n", "telemetry.broker", "expected the broker's host[:port]"),
        ('[telemetry]\nbroker = "mqtt:x"\n', "telemetry.broker", "expected host[:port]"),
        ('[telemetry]\nbroker = "mqtt"\nca_file = "/nonexistent/ca.pem"\n', "telemetry.ca_file", "no such file"),
        ('[telemetry]\nbroker = "mqtt"\nclient_cert = "c.pem"\n', "telemetry.client_cert", "together"),
        ('[telemetry]\nbroker = "mqtt"\ncommands = ["format-disk"]\n', "telemetry.commands", "expected one of"),
        ('[telemetry]\nbroker = "mqtt"\ncommands = ["test_call"]\n', "telemetry.test_call", "the number to call"),
        ('[telemetry]\nbroker = "mqtt"\ndevice = "a/b"\n', "telemetry.device", "topic level"),
    ],
)
def test_mistakes_name_the_key(tmp_path, body, key, expected):
    path = write_config(tmp_path, ["softphone_telemetry"], body)
    with pytest.raises(ConfigError) as e:
        app.prepare(str(path), secrets=False, strict=True)
    assert key in str(e.value) and expected in str(e.value), str(e.value)


def test_the_mqtt_password_comes_from_the_secrets_file(tmp_path):
    path = write_config(tmp_path, ["softphone_telemetry"], '[telemetry]\nbroker = "mqtt.example.com"\nusername = "desk"\n')
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password = "sip"\nmqtt_password = "broker"\n')
    secrets.chmod(0o600)
    config, host = app.prepare(str(path), secrets=True, strict=True)
    plugin = host.pm.get_plugin("softphone_telemetry")
    assert (plugin.host, plugin.port, plugin.password) == ("mqtt.example.com", 8883, "broker")
    assert config.password == "sip"
    # Without mqtt_password the broker would refuse the phone: said at once, naming the key.
    secrets.write_text('password = "sip"\n')
    with pytest.raises(ConfigError, match="telemetry.username: needs mqtt_password in the secrets file"):
        app.prepare(str(path), secrets=True, strict=True)
    # Checked without the secrets (doctor as any user): nothing to say about a password it did not read.
    app.prepare(str(path), secrets=False, strict=True)
    secrets.write_text('password = "sip"\nmqtt_pasword = "typo"\n')
    with pytest.raises(ConfigError, match="mqtt_pasword: unknown key"):
        app.prepare(str(path), secrets=True, strict=True)

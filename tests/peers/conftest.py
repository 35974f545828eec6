"""Loads the peer fixtures for `pytest tests/peers` when the project conftest has not already done so."""

import pytest

PLUGIN = "tests.peers.fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # Registering twice would give the session two Kamailios; the project conftest's pytest_plugins wins.
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)

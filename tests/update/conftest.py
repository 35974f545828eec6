"""The update tests download bundles from the provisioning tests' HTTPS server, under their test CA."""

from tests.device.conftest import https_server, pki  # noqa: F401 (fixtures)

"""Verified HTTPS for the device's own downloads (provisioning files, update bundles): the server's
certificate and host name checked against a given CA or the system's, no proxy taken from the environment,
and a redirect followed only to another https:// URL."""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request
from pathlib import Path


class InsecureRedirect(ValueError):
    """The server sent the client to a URL that is not https://: refused, not followed."""

    def __init__(self, url: str, target: str) -> None:
        super().__init__(f"{url}: redirected to a non-HTTPS URL ({target}): refused")
        self.url, self.target = url, target


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise InsecureRedirect(req.full_url, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(ca_file: str | Path | None) -> urllib.request.OpenerDirector:
    """An opener for https:// URLs verified against ``ca_file`` (None: the system's CAs)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects()
    )

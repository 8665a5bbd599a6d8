"""The in-process calibrator never fails its caller, whatever the gateway's address answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from caliber_client import LocalCalibrator
from caliber_client.http import Api


class _HtmlPage(BaseHTTPRequestHandler):
    """A 200 that is not JSON: what a proxy or a captive portal in front of it may answer."""

    def do_GET(self) -> None:
        body = b"<html><body>maintenance</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_body_that_is_not_json_keeps_the_raw_confidence(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="caliber_client"),
        _serving() as base,
        Api(base, retries=0, timeout=5) as api,
        LocalCalibrator(api, 7, background=False) as local,
    ):
        assert local.refresh() is False
        assert local.version is None and local.calibrate(0.9) == 0.9
    assert "not refreshed" in caplog.text and "raw confidence" in caplog.text

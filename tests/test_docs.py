"""The documents say what the code does: frame schemas and the HTTP routes."""

import re

from scripts.protocol_schemas import render
from server.app import create_app
from tests.conftest import REPO


def test_protocol_document_shows_the_frame_schemas_of_the_code() -> None:
    text = (REPO / "docs" / "device-protocol.md").read_text()
    block = text.split("<!-- frame-schemas: begin -->\n")[1].split("<!-- frame-schemas: end -->")[0]
    assert block == render() + "\n" or block == render()


def test_http_api_document_lists_every_route() -> None:
    text = (REPO / "docs" / "http-api.md").read_text()
    documented = set(re.findall(r"`(GET|POST|PATCH|DELETE|WS) (/[^`]*)`", text))
    app = create_app()
    routes = {
        (method, path)
        for path, methods in app.openapi()["paths"].items()
        for method in (m.upper() for m in methods)
    }
    routes.add(("WS", "/devices/connect"))
    assert routes <= documented, f"undocumented: {sorted(routes - documented)}"
    assert documented <= routes, f"documented but not served: {sorted(documented - routes)}"

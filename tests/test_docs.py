"""The documents say what the code does: frame schemas, the HTTP routes, and the files,
functions and tests the architecture names."""

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


def test_architecture_names_only_files_functions_and_tests_that_exist() -> None:
    """Every `path.py` and `path.py: name` the architecture document points to exists, and
    so does every test it says pins an invariant."""
    text = (REPO / "docs" / "architecture.md").read_text()
    sources = "\n".join(p.read_text() for p in REPO.glob("tests/*.py"))
    for path, names in re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)(?:: ([^`]+))?`", text):
        file = REPO / path
        if not file.exists():
            file = REPO / "server" / path  # written relative to `server/` in its own row
        assert file.exists(), path
        code = file.read_text()
        for name in re.findall(r"[A-Za-z_][\w.]*", names or ""):
            last = name.split(".")[-1]
            assert re.search(rf"(def|class) {last}\b|^{last}\b", code, re.M), f"{path}: {name}"
    for test in set(re.findall(r"`(test_\w+)", text)):
        assert f"def {test}(" in sources or f"{test}.py" in text, test

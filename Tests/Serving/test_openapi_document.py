"""docs/openapi.json itself: valid OpenAPI 3.1, and in step with docs/SERVING.md (no server needed)."""

from __future__ import annotations

import json
import re

from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from conftest import OPENAPI, REPO

PUBLIC = {"/healthz", "/readyz"}


def document() -> dict:
    return json.loads(OPENAPI.read_text())


def operations(doc):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete", "options", "head"):
                yield path, method, operation


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_every_endpoint_of_serving_md_but_mcp_is_described():
    table = (REPO / "docs" / "SERVING.md").read_text()
    listed = set()
    for methods, path in re.findall(r"^\| `((?:(?:GET|POST|PUT|PATCH|DELETE) ?)+)(/[^` ]*)`", table, re.M):
        for method in methods.split():
            listed.add((method.lower(), path))
    listed = {(m, p) for m, p in listed if not p.startswith("/mcp")}
    assert len(listed) >= 12, listed
    described = {(method, path) for path, method, _ in operations(document())}
    assert listed == described, {"only in SERVING.md": listed - described, "only in openapi.json": described - listed}


def test_auth_and_errors_are_described_everywhere():
    doc = document()
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    responses = doc["components"]["responses"]
    for path, method, operation in operations(doc):
        codes = set(operation["responses"])
        if path in PUBLIC:
            assert operation.get("security") == [], path
            continue
        assert "security" not in operation, f"{method} {path} overrides the bearer requirement"
        assert {"401", "429", "500", "503"} <= codes, (method, path, codes)
        if "requestBody" in operation or "parameters" in operation or "parameters" in doc["paths"][path]:
            assert "400" in codes, (method, path)
        if "{id}" in path or path == "/v1/chat/completions":
            assert "404" in codes, (method, path)
        if method == "post" and path != "/v1/contexts":
            assert "413" in codes, (method, path)
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                name = response["$ref"].rsplit("/", 1)[-1]
                schema = responses[name]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, code)
        assert "Retry-After" in responses[operation["responses"]["429"]["$ref"].rsplit("/", 1)[-1]]["headers"]
    error = doc["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    assert set(error["required"]) == {"message", "type", "code", "param"}


def test_ids_have_their_documented_shape():
    schemas = document()["components"]["schemas"]
    assert schemas["ContextId"]["pattern"] == "^ctx_[0-9a-f]{24}$"
    assert schemas["SessionId"]["pattern"] == "^ses_[0-9a-f]{24}$"

"""The REST API's documentation: the OpenAPI document, the request models it is made from, and the offline pages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, ValidationError

from lockgate.shells.rest import models as m
from lockgate.shells.rest.openapi import ROUTES, openapi_document, openapi_json
from lockgate.shells.rest.pages import ASSETS, ASSETS_PATH, asset, docs_html, redoc_html

from .test_cli import REPO

VERSION = "9.9.9-test"

# The REST contract's endpoints, written out again here (not taken from
# ROUTES) so that a route dropped from the table is noticed.
CONTRACT = {
    ("GET", "/mcp/{server}/tools/list"),
    ("POST", "/mcp/{server}/tools/call"),
    ("GET", "/mcp/{server}/resources/list"),
    ("POST", "/mcp/{server}/resources/read"),
    ("GET", "/mcp/{server}/prompts/list"),
    ("POST", "/mcp/{server}/prompts/get"),
    ("GET", "/mcp/{server}/health"),
    ("POST", "/mcp/batch"),
    ("GET", "/gateway/health"),
    ("GET", "/gateway/stats"),
    ("GET", "/gateway/registry"),
    ("GET", "/gateway/audit"),
    ("POST", "/gateway/register"),
    ("DELETE", "/gateway/deregister/{server}/{instance_id}"),
    ("GET", "/gateway/pins"),
    ("POST", "/gateway/pins/{server}/accept"),
    ("POST", "/gateway/pins/{server}/{tool}/accept"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/docs/assets/{file}"),
    ("GET", "/"),
    ("GET", "/status"),
    ("GET", "/status/assets/{file}"),
}
PUBLIC = {"/openapi.json", "/docs", "/redoc", "/docs/assets/{file}", "/", "/status", "/status/assets/{file}"}
ADMIN = {
    "/gateway/register", "/gateway/deregister/{server}/{instance_id}",
    "/gateway/pins/{server}/accept", "/gateway/pins/{server}/{tool}/accept",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document(VERSION)


# --- The document ---------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == VERSION


def test_every_route_of_the_contract_is_documented_with_its_method(document: dict[str, Any]) -> None:
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == CONTRACT
    assert {(route.method, route.path) for route in ROUTES} == CONTRACT
    operation_ids = [route.operation_id for route in ROUTES]
    assert len(set(operation_ids)) == len(operation_ids)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_ref_resolves_within_the_document(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert len(refs) > 50
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, ref
            node = node[part]
    assert "$defs" not in json.dumps(document)  # hoisted into components.schemas


def test_bodies_and_answers_are_the_models_schemas(document: dict[str, Any]) -> None:
    call = document["paths"]["/mcp/{server}/tools/call"]["post"]
    assert call["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CallToolRequest"}
    assert call["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CallToolResult"}
    register = document["paths"]["/gateway/register"]["post"]
    assert set(register["responses"]) == {"201", "400", "401", "403", "409", "413"}
    schemas = document["components"]["schemas"]
    assert schemas["CallToolRequest"]["additionalProperties"] is False  # requests refuse unknown keys
    assert schemas["Tool"]["additionalProperties"] is True  # MCP shapes pass through
    assert schemas["CallToolRequest"]["properties"] == m.CallToolRequest.model_json_schema()["properties"]
    limit = {p["name"]: p for p in document["paths"]["/gateway/audit"]["get"]["parameters"]}["limit"]
    assert limit == {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "How many records, newest first.",
        "schema": {"type": "integer", "default": 50, "minimum": 1, "maximum": 1000},
    }


def test_every_per_server_route_takes_agent_id_in_the_query(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        if path.startswith("/mcp/{server}/"):
            for operation in item.values():
                assert "agent_id" in {p["name"] for p in operation["parameters"] if p["in"] == "query"}, path


def test_error_answers_are_the_error_envelope(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    for response in responses.values():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in responses["RateLimited"]["headers"]
    assert "Retry-After" in responses["Unavailable"]["headers"]
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message", "status"}


def test_who_may_call_each_route(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    for path, item in document["paths"].items():
        for operation in item.values():
            if path in PUBLIC:
                assert operation["security"] == [] and operation["x-lockgate-access"] == "public"
            else:
                assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
                assert "401" in operation["responses"]
                assert operation["x-lockgate-access"] == ("admin" if path in ADMIN else "credential")


def test_the_document_is_built_once_and_served_as_is() -> None:
    assert openapi_document(VERSION) is openapi_document(VERSION)
    assert openapi_json(VERSION) is openapi_json(VERSION)
    assert json.loads(openapi_json(VERSION)) == openapi_document(VERSION)


# --- Request models ---------------------------------------------------------------

VALID_BODIES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (m.CallToolRequest, {"name": "echo"}),
    (m.ReadResourceRequest, {"uri": "file:///notes/a"}),
    (m.GetPromptRequest, {"name": "greet"}),
    (m.BatchRequest, {"calls": [{"server": "s", "name": "echo"}]}),
    (m.RegisterRequest, {"server": "s", "command": "python3"}),
    (m.RegisterRequest, {"server": "s", "endpoint": "https://example.test/mcp"}),
]


@pytest.mark.parametrize(("model", "body"), VALID_BODIES)
def test_request_models_refuse_unknown_keys(model: type[BaseModel], body: dict[str, Any]) -> None:
    model.model_validate_json(json.dumps(body))
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps({**body, "surplus": 1}))
    assert m.validation_error_data(caught.value) == {
        "errors": [{"loc": ["surplus"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]
    }


WRONG_TYPES: list[tuple[type[BaseModel], dict[str, Any], list[str | int]]] = [
    (m.CallToolRequest, {"name": 5}, ["name"]),
    (m.CallToolRequest, {"name": "echo", "arguments": []}, ["arguments"]),
    (m.CallToolRequest, {"name": "echo", "timeout_ms": "5"}, ["timeout_ms"]),  # no coercion from strings
    (m.CallToolRequest, {"name": "echo", "timeout_ms": 1.5}, ["timeout_ms"]),
    (m.CallToolRequest, {"name": "echo", "timeout_ms": 0}, ["timeout_ms"]),
    (m.CallToolRequest, {"name": "echo", "agent_id": True}, ["agent_id"]),
    (m.ReadResourceRequest, {"uri": ["a"]}, ["uri"]),
    (m.GetPromptRequest, {"name": "greet", "arguments": {"n": 1}}, ["arguments", "n"]),
    (m.BatchRequest, {"calls": [{"server": "s", "name": "a"}, {"server": "s", "name": 1}]}, ["calls", 1, "name"]),
    (m.BatchRequest, {"calls": {}}, ["calls"]),
    (m.RegisterRequest, {"server": "s", "command": "c", "weight": "2"}, ["weight"]),
    (m.RegisterRequest, {"server": "s", "command": "c", "weight": 0}, ["weight"]),
    (m.RegisterRequest, {"server": "s", "command": "c", "args": "-v"}, ["args"]),
    (m.RegisterRequest, {"server": "s", "command": "c", "env": {"K": 1}}, ["env", "K"]),
    (m.RegisterRequest, {"server": "s", "command": "c", "instance_id": "../x"}, ["instance_id"]),
    (m.RegisterRequest, {"server": "s", "endpoint": "file:///etc/passwd"}, ["endpoint"]),
]


@pytest.mark.parametrize(("model", "body", "loc"), WRONG_TYPES)
def test_a_wrong_type_names_the_field(model: type[BaseModel], body: dict[str, Any], loc: list[str | int]) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(body))
    [error] = m.validation_error_data(caught.value)["errors"]
    assert error["loc"] == loc
    assert m.validation_error_code(caught.value) is m.ApiErrorCode.INVALID_REQUEST


def test_validation_errors_never_echo_what_was_sent() -> None:
    bodies: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (m.CallToolRequest, {"name": "echo", "arguments": "SECRET-1"}),
        (m.RegisterRequest, {"server": "s", "endpoint": "ftp://user:SECRET-2@host/"}),
        (m.RegisterRequest, {"server": "s", "command": "c", "instance_id": "SECRET 3"}),
    ]
    for model, body in bodies:
        with pytest.raises(ValidationError) as caught:
            model.model_validate_json(json.dumps(body))
        data = m.validation_error_data(caught.value)
        assert "SECRET" not in json.dumps(data)
        assert all(set(error) == {"loc", "msg", "type"} for error in data["errors"])


def test_a_body_that_is_not_json_is_a_parse_error() -> None:
    with pytest.raises(ValidationError) as caught:
        m.CallToolRequest.model_validate_json(b'{"name": ')
    assert m.validation_error_code(caught.value) is m.ApiErrorCode.PARSE_ERROR
    [error] = m.validation_error_data(caught.value)["errors"]
    assert (error["loc"], error["type"]) == ([], "json_invalid")


def test_a_batch_holds_at_most_100_calls() -> None:
    call = {"server": "s", "name": "echo"}
    assert len(m.BatchRequest.model_validate_json(json.dumps({"calls": [call] * 100})).calls) == 100
    with pytest.raises(ValidationError) as caught:
        m.BatchRequest.model_validate_json(json.dumps({"calls": [call] * 101}))
    [error] = m.validation_error_data(caught.value)["errors"]
    assert (error["loc"], error["type"]) == (["calls"], "too_long")


@pytest.mark.parametrize(
    "body",
    [
        {"server": "s"},
        {"server": "s", "endpoint": "http://h/mcp", "command": "c"},
        {"server": "s", "endpoint": "http://h/mcp", "args": ["x"]},
    ],
)
def test_register_takes_exactly_one_of_endpoint_and_command(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        m.RegisterRequest.model_validate_json(json.dumps(body))
    [error] = m.validation_error_data(caught.value)["errors"]
    assert (error["loc"], error["type"]) == ([], "value_error")


def test_mcp_shapes_keep_what_the_server_sent() -> None:
    tool = {"name": "t", "inputSchema": {"type": "object"}, "_meta": {"k": 1}, "icons": [{"src": "x"}]}
    assert m.Tool.model_validate(tool).model_dump(exclude_unset=True) == tool
    result = {"content": [{"type": "text", "text": "hi", "annotations": {"priority": 1}}], "isError": False}
    assert m.CallToolResult.model_validate(result).model_dump(exclude_unset=True) == result


def test_query_parameters_are_parsed_from_strings() -> None:
    assert m.AuditQuery.model_validate({"limit": "20"}).limit == 20
    assert m.AuditQuery.model_validate({}).limit == 50
    with pytest.raises(ValidationError):
        m.AuditQuery.model_validate({"limit": "0"})


# --- Assets and pages -------------------------------------------------------------


def test_every_asset_loads_from_the_package() -> None:
    folder = resources.files("lockgate.shells.rest").joinpath("assets", "docs")
    packaged = {entry.name for entry in folder.iterdir() if entry.is_file()}
    assert packaged == set(ASSETS) | {"README.md"}  # every file is served, or is the folder's README
    for name, content_type in ASSETS.items():
        found = asset(name)
        assert found is not None and found[0] == content_type and len(found[1]) > 0
    assert asset("swagger-ui-bundle.js") == ("text/javascript; charset=utf-8", folder.joinpath("swagger-ui-bundle.js").read_bytes())


@pytest.mark.parametrize(
    "path",
    [
        "../models.py",
        "../../rest/models.py",
        "..%2fmodels.py",
        "./swagger-ui.css",
        "docs/swagger-ui.css",
        "/swagger-ui.css",
        "/etc/passwd",
        str(REPO / "pyproject.toml"),
        "C:\\Windows\\win.ini",
        "README.md",
        "unknown.js",
        "",
        ".",
        "swagger-ui.css/",
        "SWAGGER-UI.CSS",
        "swagger-ui.css\x00.txt",
    ],
)
def test_anything_but_a_known_file_name_is_refused(path: str) -> None:
    assert asset(path) is None


class _Links(HTMLParser):
    """Every URL a page loads or links to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "action", "data") and value is not None]


@pytest.mark.parametrize("page", [docs_html, redoc_html])
def test_the_pages_load_only_local_files(page: Any) -> None:
    html = page().decode("utf-8")
    links = _Links()
    links.feed(html)
    assert links.urls
    for url in links.urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/") and not url.startswith("//"), url
        assert url.startswith(ASSETS_PATH) and asset(url.removeprefix(ASSETS_PATH)) is not None, url
    assert not re.search(r"https?:|//[a-z]", html, flags=re.IGNORECASE)
    assert "<script>" not in html  # no inline script: a CSP of script-src 'self' keeps working


@pytest.mark.parametrize("name", ["swagger-init.js", "redoc-init.js"])
def test_the_viewers_read_the_local_document_and_no_fonts(name: str) -> None:
    found = asset(name)
    assert found is not None
    script = found[1].decode("utf-8")
    assert '"/openapi.json"' in script
    assert not re.search(r"https?:|fonts\.|googleapis", script)


def test_the_assets_readme_names_the_versions_and_licences() -> None:
    readme = resources.files("lockgate.shells.rest").joinpath("assets", "docs", "README.md").read_text("utf-8")
    for expected in ("`swagger-ui-dist` | 5.35.0 | Apache-2.0", "`redoc` | 2.5.4 | MIT", "sha512-"):
        assert expected in readme


def test_the_wheel_ships_the_assets(tmp_path: Path) -> None:
    # What `make wheel-check` builds and installs: the pages must work from it.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("lockgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__.py", "models.py", "openapi.py", "pages.py"):
        assert f"lockgate/shells/rest/{module}" in names
    for name in [*ASSETS, "README.md"]:
        assert f"lockgate/shells/rest/assets/docs/{name}" in names

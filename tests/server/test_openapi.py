"""The OpenAPI document: committed as the app makes it, and saying what the server answers."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from randomizer.backends.wire import error_classes
from randomizer.errors import Hint
from randomizer.server import api, openapi
from randomizer.server.app import STATUS

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "python -m randomizer.server.openapi > docs/openapi.json"

DOCUMENT = openapi.document()
ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
PUBLIC = {("get", "/api/v1/health"), ("post", "/api/v1/auth/token")}
SIGNED_IN_REFUSALS = {"400", "401", "403", "404", "409", "413", "422", "503"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in DOCUMENT["paths"].items()
        for method, operation in methods.items()
    ]


OPERATIONS = _operations()
IDS = [f"{method.upper()} {path}" for method, path, _ in OPERATIONS]


def test_the_committed_document_is_the_apps() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi.render(), (
        f"docs/openapi.json differs from the app's document: run '{REGENERATE}' and commit it"
    )


def test_main_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    openapi.main()
    assert capsys.readouterr().out == openapi.render()


def test_every_route_is_in_the_document_summarised_from_its_docstring() -> None:
    routes = [r for r in [*api.public.routes, *api.router.routes] if isinstance(r, APIRoute)]
    assert len(routes) == len(OPERATIONS)
    for route in routes:
        (method,) = list(route.methods or ())
        # a ":path" converter is the server's business; the document names the parameter
        operation = DOCUMENT["paths"][route.path.replace(":path}", "}")][method.lower()]
        docstring = inspect.cleandoc(route.endpoint.__doc__ or "")
        assert docstring, f"{route.path}: the endpoint has no docstring"
        assert operation["summary"] == docstring.splitlines()[0]
        assert operation["description"] == docstring
        assert operation["operationId"] == route.endpoint.__name__


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_refusal_is_declared_as_one_error_body(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    responses = operation["responses"]
    refusals = {status for status in responses if int(status) >= 400}
    for status in refusals:
        assert responses[status]["content"] == ERROR_BODY, (path, status)
        assert responses[status]["description"]
    if (method, path) == ("get", "/api/v1/health"):
        assert refusals == {"413"}
    elif (method, path) == ("post", "/api/v1/auth/token"):
        assert refusals == {"400", "401", "409", "413", "422", "429", "503"}
        assert responses["429"]["headers"]["Retry-After"] == {
            "description": "Whole seconds until a login may be tried again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    else:
        assert refusals == SIGNED_IN_REFUSALS
    if "401" in refusals:
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "HTTPValidationError" not in str(operation)


def test_every_status_the_error_boundary_gives_is_declared() -> None:
    mapped = {str(code) for _, code in STATUS}
    assert mapped - {"429"} <= SIGNED_IN_REFUSALS
    assert "429" in DOCUMENT["paths"]["/api/v1/auth/token"]["post"]["responses"]


def test_the_error_body_is_error_kind_and_an_optional_hint() -> None:
    schema = DOCUMENT["components"]["schemas"]["ErrorBody"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["error", "kind"]
    assert set(schema["properties"]) == {"error", "kind", "hint"}
    assert schema["properties"]["hint"]["enum"] == [hint.name for hint in Hint]
    assert schema["properties"]["error"]["pattern"] == "^[^\\r\\n]+$"
    assert schema["properties"]["kind"]["enum"] == sorted(error_classes())


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_signed_in_operations_declare_the_bearer_scheme(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    if (method, path) in PUBLIC:
        assert "security" not in operation
    else:
        assert operation["security"] == [{"HTTPBearer": []}]


def test_the_bearer_scheme_is_http_bearer() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert set(schemes) == {"HTTPBearer"}
    assert (schemes["HTTPBearer"]["type"], schemes["HTTPBearer"]["scheme"]) == ("http", "bearer")
    assert "/api/v1/auth/token" in schemes["HTTPBearer"]["description"]


def test_the_export_is_csv_with_its_digest() -> None:
    answer = DOCUMENT["paths"]["/api/v1/unblinding"]["post"]["responses"]["200"]
    assert answer["content"] == {"text/csv": {"schema": {"type": "string"}}}
    assert {name: header["required"] for name, header in answer["headers"].items()} == {
        "X-Randomizer-SHA256": True,
        "X-Randomizer-Participants": True,
    }


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        (
            "/api/v1/participants/{participant}/emergency-unblinding",
            {"$ref": "#/components/schemas/Unblinding"},
        ),
        ("/api/v1/kits/{code}/prepare", {"$ref": "#/components/schemas/Preparation"}),
        (
            "/api/v1/pharmacy/kits",
            {
                "type": "array",
                "title": "Response Pharmacy List",
                "items": {"$ref": "#/components/schemas/PharmacyKit"},
            },
        ),
        ("/api/v1/users/{name}/unlock", {"$ref": "#/components/schemas/LoginUnlock"}),
    ],
)
def test_results_sent_as_they_are_still_declare_their_schema(
    path: str, schema: dict[str, Any]
) -> None:
    (operation,) = DOCUMENT["paths"][path].values()
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == schema

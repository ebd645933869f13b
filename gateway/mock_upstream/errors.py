"""OpenAI-shaped errors of the mock upstream and the JSON response helper."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response


class MockAPIError(Exception):
    """An error the mock renders as an OpenAI error envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def to_body(self) -> dict[str, object]:
        """Return the OpenAI error envelope for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class MockConnectionReset(Exception):
    """Raised inside a streaming body to make the server drop the connection mid-response."""


def json_response(
    content: object, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Serialize `content` with the json module into an application/json response."""
    return Response(json.dumps(content), status_code, headers, "application/json")


def error_response(exc: MockAPIError) -> Response:
    """Render a MockAPIError as its JSON response."""
    return json_response(exc.to_body(), exc.status_code, exc.headers)


async def handle_mock_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for MockAPIError."""
    assert isinstance(exc, MockAPIError)
    return error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Render Starlette's 404/405 as OpenAI's 'Invalid URL' error."""
    status = getattr(exc, "status_code", 404)
    message = f"Invalid URL ({request.method} {request.url.path})"
    return error_response(MockAPIError(status, message))


def missing(param: str) -> MockAPIError:
    """A required parameter is absent."""
    return MockAPIError(
        400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def json_type_name(value: object) -> str:
    """Name a JSON value's type the way OpenAI's error messages do."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: object) -> MockAPIError:
    """A parameter has the wrong JSON type."""
    message = f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} instead."
    return MockAPIError(400, message, param=param, code="invalid_type")


def invalid_value(param: str, value: object, supported: tuple[str, ...]) -> MockAPIError:
    """A parameter has a value outside its enumeration."""
    quoted = [f"'{s}'" for s in supported]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    message = f"Invalid value: '{value}'. Supported values are: {listed}."
    return MockAPIError(400, message, param=param, code="invalid_value")


def empty_array(param: str) -> MockAPIError:
    """An array parameter that needs at least one item is empty."""
    message = (
        f"Invalid '{param}': empty array. "
        "Expected an array with minimum length 1, but got an empty array instead."
    )
    return MockAPIError(400, message, param=param, code="empty_array")

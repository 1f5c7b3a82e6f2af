"""The error contract: `{"error": {"code", "message"}}`, never a 500 for bad input."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from chatlake.errors import NotFound

log = structlog.get_logger("chatlake.api")
ModelT = TypeVar("ModelT", bound=BaseModel)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.message = message
        self.headers = headers
        self.details = details


def parse_json_body(model: type[ModelT], raw: bytes) -> ModelT:
    """Validate a JSON body; failures take the same 400/422 path as FastAPI's own parsing."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]
        raise RequestValidationError(errors) from None


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return Response(
        orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def unauthorized(message: str = "missing or invalid API key") -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _malformed(err: Any) -> bool:
    """Unparseable JSON, or a body that arrived as raw text instead of JSON."""
    if err.get("type") == "json_invalid":
        return True
    return tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes | str)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(_malformed(err) for err in errors):
            return error_response(400, "malformed_json", "the request body must be a JSON object")
        details = [
            {"field": _location(err.get("loc", ())), "problem": str(err.get("msg", ""))}
            for err in errors
        ]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        return error_response(
            422, "validation_error", summary or "invalid request", details=details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled_error", error=repr(exc))
        return error_response(
            500, "internal_error", "internal error; the request id is in the logs"
        )

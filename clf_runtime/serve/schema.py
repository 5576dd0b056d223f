"""Request bodies of the HTTP routes: parse, validate, and say exactly what is wrong.

Shapes follow the servers users know: ``POST /predict`` is Hugging Face TEI's
(``{"inputs": str | [str], "raw_scores": bool, "truncate": bool}``), ``POST /classify`` is
vLLM's OpenAI-style classification API (``{"input": str | [str]}``). Every refusal names the
field, what was received and what to send instead: 422 for malformed JSON or wrong types,
413 for more texts than the server takes per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

__all__ = ["TextsRequest", "parse_classify", "parse_json", "parse_predict"]

_EXAMPLE = {"/predict": '{"inputs": "some text"}', "/classify": '{"input": "some text"}'}


@dataclass(frozen=True)
class TextsRequest:
    """A validated request: the texts and how to answer."""

    texts: list[str]
    single: bool
    """The client sent one string (not a list): answer with one item, not a list of them."""
    raw_scores: bool = False
    """Return logits instead of probabilities (TEI's ``raw_scores``)."""
    truncate: bool = True
    """Keep the head of texts over the model's max_length; False refuses them (413)."""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid(message: str) -> ApiError:
    return ApiError(422, message, "validation")


def parse_json(body: bytes, route: str) -> dict[str, Any]:
    """The body as a JSON object, or 422 saying why it is not one."""
    example = _EXAMPLE.get(route, "{...}")
    if not body.strip():
        raise _invalid(f"the request body is empty; send a JSON object such as {example}")
    try:
        data = json.loads(body)
    except UnicodeDecodeError as e:
        raise _invalid(f"the request body is not UTF-8 text ({e}); send UTF-8 JSON") from e
    except json.JSONDecodeError as e:
        raise _invalid(
            f"the request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            f"send a JSON object such as {example}"
        ) from e
    if not isinstance(data, dict):
        raise _invalid(
            f"the request body is {_json_type(data)}; send a JSON object such as {example}"
        )
    return data


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], route: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _invalid(
            f"unknown field(s) {', '.join(repr(k) for k in unknown)} for {route}; "
            f"the accepted fields are {', '.join(repr(k) for k in allowed)}"
        )


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(f'"{key}" must be true or false, got {_json_type(value)}')
    return value


def _texts(value: Any, key: str, max_client_batch: int, example: str) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list):
        raise _invalid(
            f'"{key}" must be a string or an array of strings, got {_json_type(value)}; '
            f"send e.g. {example}"
        )
    if not value:
        raise _invalid(f'"{key}" is an empty array; send at least one text')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = (
                "; text pairs are not supported, send one string per text"
                if isinstance(item, list)
                else ""
            )
            raise _invalid(f'"{key}"[{i}] is {_json_type(item)}, expected a string{hint}')
    if len(value) > max_client_batch:
        raise ApiError(
            413,
            f'"{key}" holds {len(value)} texts, more than this server takes in one request '
            f"({max_client_batch}, --max-client-batch); split them over several requests",
            "validation",
        )
    return value, False


def parse_predict(data: Mapping[str, Any], *, max_client_batch: int) -> TextsRequest:
    """Validate a ``POST /predict`` body (TEI's shape)."""
    _check_keys(data, ("inputs", "raw_scores", "truncate", "truncation_direction"), "/predict")
    if "inputs" not in data:
        raise _invalid(f'the field "inputs" is missing; send e.g. {_EXAMPLE["/predict"]}')
    direction = data.get("truncation_direction", "right")
    if direction not in ("right", "Right"):
        # The runtime keeps a text's head (its first max_length tokens), i.e. cuts on the right.
        raise _invalid(
            f'"truncation_direction" {direction!r} is not supported; this server keeps the '
            'first tokens of a long text ("right")'
        )
    texts, single = _texts(data["inputs"], "inputs", max_client_batch, _EXAMPLE["/predict"])
    return TextsRequest(
        texts=texts,
        single=single,
        raw_scores=_bool(data, "raw_scores", False),
        truncate=_bool(data, "truncate", True),
    )


def parse_classify(data: Mapping[str, Any], *, max_client_batch: int) -> TextsRequest:
    """Validate a ``POST /classify`` body (vLLM's OpenAI-style shape)."""
    _check_keys(data, ("input", "model", "user", "truncate"), "/classify")
    if "input" not in data:
        raise _invalid(f'the field "input" is missing; send e.g. {_EXAMPLE["/classify"]}')
    for key in ("model", "user"):  # accepted as OpenAI clients send them; not used
        if key in data and not isinstance(data[key], str):
            raise _invalid(f'"{key}" must be a string, got {_json_type(data[key])}')
    texts, single = _texts(data["input"], "input", max_client_batch, _EXAMPLE["/classify"])
    return TextsRequest(texts=texts, single=single, truncate=_bool(data, "truncate", True))

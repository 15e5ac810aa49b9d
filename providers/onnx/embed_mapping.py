"""OpenAI ``POST /v1/embeddings`` for local embedding models: the request's inputs and options, the answer's body.

Refusals are :class:`ProviderError` with OpenAI's ``invalid_request_error`` shape and the ``param`` they concern.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minigate.providers.base import ProviderError

if TYPE_CHECKING:  # numpy is imported with the model, on the first request, not with the provider
    import numpy as np

__all__ = ["MAX_INPUTS", "EmbeddingJob", "check_dimensions", "parse_embedding_request", "response_body"]

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request


@dataclass(frozen=True, slots=True)
class EmbeddingJob:
    """What to embed: ``texts`` (strings) or ``tokens`` (token arrays, without the model's special tokens)."""

    texts: list[str] | None
    tokens: list[list[int]] | None
    encoding_format: str
    dimensions: int | None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.tokens or [])


def _refuse(message: str, param: str, code: str = "invalid_value") -> ProviderError:
    return ProviderError(message, status=400, type="invalid_request_error", code=code, param=param, fallback=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_embedding_request(body: dict[str, Any]) -> EmbeddingJob:
    """Read ``input`` (a string, a list of strings, a token array or a list of token arrays), ``encoding_format``
    (float or base64) and ``dimensions`` from a request body."""
    raw = body.get("input")
    texts: list[str] | None = None
    tokens: list[list[int]] | None = None
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        texts = list(raw)
    elif isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        tokens = [list(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(x, list) and all(_is_int(t) for t in x) for x in raw):
        tokens = [list(x) for x in raw]
    else:
        raise _refuse(
            "'input' must be a string, a list of strings, a token array or a list of token arrays (not mixed)",
            "input",
        )
    items: list[Any] = texts if texts is not None else tokens or []
    if len(items) > MAX_INPUTS:
        raise _refuse(f"'input' has {len(items)} items; at most {MAX_INPUTS} may be embedded at once", "input")
    for i, item in enumerate(items):
        if not item:
            raise _refuse(f"input[{i}] is empty: nothing to embed", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise _refuse(f"'encoding_format' must be float or base64, not {fmt!r}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _refuse("'dimensions' must be a positive integer", "dimensions")
    return EmbeddingJob(texts, tokens, fmt, dimensions)


def check_dimensions(job: EmbeddingJob, model: str, full: int, matryoshka: tuple[int, ...]) -> int | None:
    """The size to cut vectors to (None: the model's own); a 400 for a size the model cannot give.

    Only a Matryoshka model's vectors may be cut (to any size up to its own; it was trained at ``matryoshka``);
    asking any model for its own size is allowed. A refusal is a capability refusal: another deployment may serve.
    """
    if job.dimensions is None or job.dimensions == full:
        return None
    if matryoshka and job.dimensions < full:
        return job.dimensions
    if matryoshka:
        why = f"at most {full}"
    else:
        why = f"only its own {full}: it is not a Matryoshka model, its vectors cannot be shortened"
    raise ProviderError(
        f"{model} cannot give vectors of {job.dimensions} dimensions ({why})",
        status=400,
        type="invalid_request_error",
        code="unsupported_dimensions",
        param="dimensions",
        fallback=True,
        cooldown=False,
        capability=True,
    )


def response_body(
    model: str, vectors: np.ndarray[Any, np.dtype[np.float32]], encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's ``list`` of ``embedding`` objects; base64 is the little-endian float32 bytes, as OpenAI sends."""
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        if encoding_format == "base64":
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}

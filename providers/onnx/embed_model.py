"""A local embedding model: an ONNX encoder, its ``tokenizer.json`` and ``embedding.json``, run with onnxruntime.

Synchronous and thread-safe for one caller at a time; :mod:`minigate.providers.onnx.embed_provider` runs it in a
thread of its own (onnxruntime and tokenizers release the GIL while they work). Imports onnxruntime, numpy and
tokenizers, so only the provider's first request imports this module.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

__all__ = ["SPEC_FILE", "EmbeddingModel", "EmbeddingSpec", "read_spec", "shorten"]

SPEC_FILE = "embedding.json"
POOLINGS = ("mean", "cls")


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    """What ``embedding.json`` says of a model: its files, pooling, output size and input limit.

    ``matryoshka_dimensions`` lists the shorter sizes the model was trained to give as prefixes of its vectors
    (Matryoshka representation learning); empty for a model whose vectors must not be cut.
    """

    onnx_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    pooling: str = "mean"
    normalize: bool = True
    dimensions: int = 384
    max_input_tokens: int = 256
    matryoshka_dimensions: tuple[int, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The ``embedding.json`` document."""
        return {
            "kind": "embedding",
            "onnx_file": self.onnx_file,
            "tokenizer_file": self.tokenizer_file,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "dimensions": self.dimensions,
            "max_input_tokens": self.max_input_tokens,
            "matryoshka_dimensions": list(self.matryoshka_dimensions),
        }


def read_spec(folder: Path) -> EmbeddingSpec:
    """The folder's ``embedding.json``; ValueError naming what is wrong with it."""
    try:
        raw = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder / SPEC_FILE}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") != "embedding":
        raise ValueError(f"{folder / SPEC_FILE} is not an embedding model's spec (kind: embedding)")
    spec = EmbeddingSpec(
        onnx_file=str(raw.get("onnx_file", "model.onnx")),
        tokenizer_file=str(raw.get("tokenizer_file", "tokenizer.json")),
        pooling=str(raw.get("pooling", "mean")),
        normalize=bool(raw.get("normalize", True)),
        dimensions=int(raw["dimensions"]),
        max_input_tokens=int(raw["max_input_tokens"]),
        matryoshka_dimensions=tuple(int(d) for d in raw.get("matryoshka_dimensions") or ()),
    )
    for name in (spec.onnx_file, spec.tokenizer_file):
        if Path(name).name != name:
            raise ValueError(f"{folder / SPEC_FILE} names a file outside the model folder: {name!r}")
    if spec.pooling not in POOLINGS:
        raise ValueError(f"{folder / SPEC_FILE}: pooling must be one of {', '.join(POOLINGS)}")
    if any(not 0 < d <= spec.dimensions for d in spec.matryoshka_dimensions):
        raise ValueError(f"{folder / SPEC_FILE}: matryoshka_dimensions must lie in 1..{spec.dimensions}")
    return spec


class EmbeddingModel:
    """One loaded embedding model. :meth:`embed` turns token sequences into unit vectors (for ``normalize``)."""

    def __init__(self, folder: Path, *, threads: int | None = None) -> None:
        started = time.monotonic()
        self.spec = read_spec(folder)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / self.spec.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(folder / self.spec.tokenizer_file))
        self.tokenizer.no_truncation()  # over-long inputs are refused by the caller, never cut silently
        self.tokenizer.no_padding()
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)
        self._prefix, self._suffix = self._special_tokens()
        self.load_seconds = time.monotonic() - started

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's own (``[CLS]`` and ``[SEP]`` for BERT)."""
        plain = self.tokenizer.encode("hello", add_special_tokens=False).ids
        full = self.tokenizer.encode("hello", add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start], full[start + len(plain) :]
        return [], []

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids as the model sees them (special tokens included)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def wrap(self, tokens: list[int]) -> list[int]:
        """A client's token array (the tokenizer's ids of a text, without special tokens) as the model sees it."""
        return [*self._prefix, *tokens, *self._suffix]

    def embed(self, sequences: list[list[int]], batch_size: int = 32) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One vector per sequence (rows in order), computed in batches of similar lengths."""
        out = np.empty((len(sequences), self.spec.dimensions), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run([sequences[i] for i in rows])
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray[Any, np.dtype[np.float32]]:
        width = max(len(s) for s in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0]
        if self.spec.pooling == "cls":
            vectors = hidden[:, 0, :]
        else:
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.spec.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        result: np.ndarray[Any, np.dtype[np.float32]] = vectors.astype(np.float32, copy=False)
        return result


def shorten(vectors: np.ndarray[Any, np.dtype[np.float32]], dimensions: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Matryoshka vectors cut to their first ``dimensions`` and normalised again."""
    cut = vectors[:, :dimensions]
    result: np.ndarray[Any, np.dtype[np.float32]] = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return result.astype(np.float32, copy=False)

"""Local models with onnxruntime-genai: the ``onnxruntime-genai`` provider, its worker processes and model tools.

Importing this package does not import onnxruntime-genai (only the worker processes do), nor the conversion
tools (only :mod:`minigate.providers.onnx.convert` does, lazily; ``python -m minigate.providers.onnx.cli`` runs them).
"""

from minigate.providers.onnx.config import OnnxProviderConfig
from minigate.providers.onnx.provider import OnnxProvider, register

__all__ = ["OnnxProvider", "OnnxProviderConfig", "register"]

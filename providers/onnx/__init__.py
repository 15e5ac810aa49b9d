"""Local models with onnxruntime-genai: the ``onnxruntime-genai`` provider, its worker processes and model tools.

Importing this package does not import onnxruntime-genai (only the worker processes do), nor the conversion
tools (only :mod:`providers.onnx.convert` does, lazily; ``python -m providers.onnx.cli`` runs them).
"""

from providers.onnx.config import OnnxProviderConfig
from providers.onnx.provider import OnnxProvider, register

__all__ = ["OnnxProvider", "OnnxProviderConfig", "register"]

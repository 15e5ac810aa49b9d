"""The built-in workflow step types, as a plugin: its ``init`` hook registers them exactly as a third-party plugin
registers its own (``minigate.gateway.plugins.loader`` loads it first, through the same hook)."""

from __future__ import annotations

from minigate.gateway.config.workflow_steps import LLMInference, MarkdownRender, PromptTemplate
from minigate.gateway.plugins.hookspecs import PluginAPI

__all__ = ["init"]


def init(api: PluginAPI) -> None:
    """Plugin hook: register the ``prompt_template``, ``llm_inference`` and ``markdown_render`` step types."""
    for step in (PromptTemplate, LLMInference, MarkdownRender):
        api.steps.register(step)

"""Markdown of model answers, rendered on the server and sanitised: an answer is untrusted text.

Raw HTML shows as text, images become a placeholder (a remote image would leak the conversation), links keep only
http(s) and mailto, and nh3 removes every tag and attribute not on a short allow-list.
"""

from __future__ import annotations

from collections.abc import Sequence

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup, escape

__all__ = ["MarkdownRenderer"]

_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
_SCHEMES = {"http", "https", "mailto"}


def _image(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    return f'<span class="img-placeholder">[image: {escape(alt or "no description")}]</span>'


class MarkdownRenderer:
    """CommonMark with tables and strikethrough, no raw HTML, no images; output sanitised by nh3."""

    def __init__(self) -> None:
        """Build the parser (once per app: it is reused for every answer)."""
        md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        md.enable(["table", "strikethrough"])
        md.add_render_rule("image", _image)
        self._md = md

    def render(self, text: str) -> Markup:
        """Safe HTML for ``text``."""
        html = self._md.render(text)
        clean = nh3.clean(
            html,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
            allowed_classes={"span": {"img-placeholder"}},
        )
        return Markup(clean)

"""Markdown of model answers, rendered on the server and sanitised: an answer is untrusted text.

Raw HTML shows as text, images become a placeholder (a remote image would leak the conversation), links keep only
http(s) and mailto, and nh3 removes every tag and attribute not on a short allow-list. Code blocks are highlighted
by Pygments into a few ``hl-*`` classes (no inline style: CSP) when their language is named; the chat's renderer
also wraps each in a header with the language and a Copy button (markup only the renderer writes: the answer's
own HTML is off). LaTeX (``$...$``, ``\\(...\\)``, ``$$...$$``, ``\\[...\\]``) becomes MathML, which browsers draw
natively; a formula latex2mathml cannot read shows as its source. An answer is rendered block by block (each
top-level paragraph, list, code block, table or formula sanitised on its own), so a streaming answer's blocks that
did not change are neither sanitised nor sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup, escape
from pygments import lex
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Comment, Generic, Keyword, Name, Number, Operator, String, _TokenType
from pygments.util import ClassNotFound

__all__ = ["HIGHLIGHT_LIMIT", "MATH_LIMIT", "Blocks", "MarkdownRenderer"]

HIGHLIGHT_LIMIT = 50_000  # characters: a bigger code block is shown plain (lexing it would hold the event loop)
_LEXERS_KEPT = 256  # lexers looked up by language name, kept for reuse (unknown names too, as None)
# Highlighted blocks and formulas kept by (language, code): a streaming answer is rendered again every 80 ms, and
# only its last block is still growing. Bounded by their characters; all are dropped when full.
_HIGHLIGHTS_KEPT = 2_000_000

# Pygments' token types folded into a dozen classes, most specific first; tokens of none stay unwrapped text.
_CLASSES: tuple[tuple[_TokenType, str], ...] = (
    (Comment.Preproc, "hl-d"),
    (Comment, "hl-c"),
    (Keyword.Constant, "hl-m"),
    (Keyword, "hl-k"),
    (Operator.Word, "hl-k"),
    (Name.Builtin, "hl-b"),
    (Name.Function, "hl-f"),
    (Name.Class, "hl-f"),
    (Name.Exception, "hl-f"),
    (Name.Decorator, "hl-d"),
    (Name.Tag, "hl-t"),
    (Name.Attribute, "hl-a"),
    (Name.Variable, "hl-v"),
    (Name.Constant, "hl-v"),
    (String, "hl-s"),
    (Number, "hl-m"),
    (Generic.Inserted, "hl-gi"),
    (Generic.Deleted, "hl-gd"),
    (Generic.Heading, "hl-gh"),
    (Generic.Subheading, "hl-gh"),
)
HIGHLIGHT_CLASSES = frozenset(name for _, name in _CLASSES)

MATH_LIMIT = 4_000  # characters of one formula; a longer one is shown as its LaTeX source
# What latex2mathml writes, less colours and links: MathML Core, which Chromium and Firefox draw natively.
_MATH_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "mtext", "mspace", "msup", "msub", "msubsup", "mfrac", "msqrt", "mroot",
    "mover", "munder", "munderover", "mstyle", "mpadded", "mphantom", "menclose", "mtable", "mtr", "mtd",
}  # fmt: skip
_MATH_ATTRIBUTES = {
    "display", "accent", "depth", "displaystyle", "fence", "height", "linethickness", "lspace", "rspace", "mathsize",
    "mathvariant", "maxsize", "minsize", "movablelimits", "notation", "rowspacing", "columnspacing", "columnalign",
    "separator", "stretchy", "voffset", "width", "form", "largeop", "scriptlevel", "linebreak",
}  # fmt: skip
_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "div", "button",
    *_MATH_TAGS,
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "button": {"type", "aria-label"},
    **{tag: _MATH_ATTRIBUTES for tag in _MATH_TAGS},
}
_SCHEMES = {"http", "https", "mailto"}
_CLASSES_ALLOWED = {
    "span": {"img-placeholder", "code-lang", *HIGHLIGHT_CLASSES},
    "div": {"code-block", "code-head", "math-block"},
    "code": {"math-source"},
    "button": {"copy-code"},
}


@dataclass(frozen=True, slots=True)
class Blocks:
    """An answer rendered block by block: each top-level block's markup as markdown-it wrote it (``raw``) and
    sanitised (``html``); every block is one element, and the sanitised blocks joined are the answer's HTML."""

    raw: tuple[str, ...] = ()
    html: tuple[str, ...] = ()


def _image(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    return f'<span class="img-placeholder">[image: {escape(alt or "no description")}]</span>'


def _closing_dollar(src: str, start: int) -> int:
    """Where the ``$`` closing inline math opened before ``start`` is, or -1. Pandoc's rule, stricter, which keeps
    prices text: the opening ``$`` has no space after it, the next unescaped ``$`` closes it or nothing does, and
    only with no space before it and no digit after it ("$5 and $10", "$5-$10" are no formula)."""
    end = start
    while (end := src.find("$", end)) >= 0 and src[end - 1] == "\\":
        end += 1
    if end < 0 or src[end - 1].isspace() or src[end + 1 : end + 2].isdigit() or "\n\n" in src[start:end]:
        return -1
    return end


def _math_inline(state: StateInline, silent: bool) -> bool:
    """``\\(...\\)``, ``$...$`` and ``$$...$$`` inside a paragraph: a ``math_inline`` token (before "escape")."""
    src, pos = state.src, state.pos
    if src.startswith("\\(", pos):
        end, skip = src.find("\\)", pos + 2), 2
    elif src.startswith("$$", pos):
        end, skip = src.find("$$", pos + 2), 2
    elif src.startswith("$", pos) and pos + 1 < state.posMax and not src[pos + 1].isspace():
        end, skip = _closing_dollar(src, pos + 1), 1
    else:
        return False
    if end < 0 or end > state.posMax or end == pos + skip:
        return False
    if not silent:
        token = state.push("math_inline", "math", 0)
        token.content = src[pos + skip : end]
        token.markup = "$$" if src.startswith("$$", pos) else src[pos : pos + skip]
    state.pos = end + skip
    return True


def _math_block(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """A ``$$`` or ``\\[`` line up to the line that ends with ``$$`` or ``\\]``: a ``math_block`` token. Until
    it is closed (an answer mid-stream) it is no block, and shows as typed."""
    if state.sCount[start] - state.blkIndent >= 4:
        return False
    first = state.src[state.bMarks[start] + state.tShift[start] : state.eMarks[start]]
    opening = first[:2]
    if opening not in ("$$", "\\["):
        return False
    closing = "$$" if opening == "$$" else "\\]"
    lines, line = [first[2:]], start
    while not lines[-1].rstrip().endswith(closing) or (line == start and len(lines[-1].strip()) < len(closing)):
        line += 1
        if line >= end:
            return False
        lines.append(state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]])
    if silent:
        return True
    token = state.push("math_block", "math", 0)
    token.block = True
    token.content = "\n".join(lines).rstrip()[: -len(closing)].strip()
    token.markup = opening
    token.map = [start, line + 1]
    state.line = line + 1
    return True


def _class_of(ttype: _TokenType, known: dict[_TokenType, str | None]) -> str | None:
    if ttype not in known:
        known[ttype] = next((name for kind, name in _CLASSES if ttype in kind), None)
    return known[ttype]


class MarkdownRenderer:
    """CommonMark with tables and strikethrough, no raw HTML, no images; output sanitised by nh3.

    ``code_tools``: each code block gets a header with its language and a Copy button (the chat's page script
    makes it work); without it (a workflow's HTML output) a code block is a plain ``<pre>``.
    """

    def __init__(self, code_tools: bool = False) -> None:
        """Build the parser (once per app: it is reused for every answer)."""
        md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        md.options["highlight"] = self._highlight
        md.enable(["table", "strikethrough"])
        md.add_render_rule("image", _image)
        fence = self._fence

        def fence_rule(_r: RendererHTML, tokens: Sequence[Token], idx: int, _o: OptionsDict, _e: EnvType) -> str:
            return fence(tokens[idx])

        md.add_render_rule("fence", fence_rule)
        md.add_render_rule("code_block", fence_rule)
        md.inline.ruler.before("escape", "math_inline", _math_inline)
        md.block.ruler.before("fence", "math_block", _math_block, {"alt": ["paragraph", "reference", "blockquote"]})
        math = self._math

        def math_rule(_r: RendererHTML, tokens: Sequence[Token], idx: int, _o: OptionsDict, _e: EnvType) -> str:
            token = tokens[idx]
            return math(token.content, token.markup, token.type == "math_block")

        md.add_render_rule("math_inline", math_rule)
        md.add_render_rule("math_block", math_rule)
        self._md = md
        self._cleaner = nh3.Cleaner(
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
            allowed_classes=_CLASSES_ALLOWED,
        )
        self._code_tools = code_tools
        self._lexers: dict[str, Lexer | None] = {}
        self._classes: dict[_TokenType, str | None] = {}
        self._highlights: dict[tuple[str, str], str] = {}
        self._highlights_size = 0

    def render(self, text: str) -> Markup:
        """Safe HTML for ``text``."""
        return Markup("".join(self.blocks(text).html))

    def markup(self, text: str) -> str:
        """markdown-it's HTML for the whole of ``text``, not yet sanitised (for comparisons: tests, the bench)."""
        return str(self._md.render(text))

    def sanitise(self, html: str) -> str:
        """``html`` less every tag, attribute, class and URL scheme off the allow-list (each block goes through it)."""
        return self._cleaner.clean(html)

    def blocks(self, text: str, before: Blocks | None = None) -> Blocks:
        """``text`` rendered and sanitised block by block. A block whose markup is the same as the same block's in
        ``before`` (the answer's previous render, while it streams) keeps that sanitised HTML, the same object.

        A top-level block is balanced markup (markdown-it closes what it opens), so sanitising the blocks one by
        one gives what sanitising them joined gives (tests/web/test_chat_blocks.py compares the two)."""
        md = self._md
        env: EnvType = {}
        tokens = md.parse(text, env)
        known = before or Blocks()
        raw: list[str] = []
        html: list[str] = []
        start = 0
        for end, token in enumerate(tokens, 1):
            if token.level or token.nesting > 0:  # inside a block, or its opening tag
                continue
            block = md.renderer.render(tokens[start:end], md.options, env)
            start, i = end, len(raw)
            raw.append(block)
            html.append(known.html[i] if i < len(known.raw) and known.raw[i] == block else self.sanitise(block))
        return Blocks(tuple(raw), tuple(html))

    def _math(self, latex: str, markup: str, block: bool) -> str:
        """MathML for a formula; its LaTeX source as code when it is too long or latex2mathml cannot read it."""
        key = (f"math-{block}", latex)
        if key not in self._highlights:
            try:
                if len(latex) > MATH_LIMIT:
                    raise ValueError("formula too long")
                html = latex_to_mathml(latex, display="block" if block else "inline")
            except Exception:  # whatever the converter raises on untrusted LaTeX: the source is shown instead
                closing = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}.get(markup, "")
                html = f'<code class="math-source">{escapeHtml(markup + latex + closing)}</code>'
            self._keep(key, html)
        html = self._highlights[key]
        return f'<div class="math-block">{html}</div>\n' if block else html

    def _keep(self, key: tuple[str, str], html: str) -> None:
        if self._highlights_size + len(key[1]) > _HIGHLIGHTS_KEPT:
            self._highlights.clear()
            self._highlights_size = 0
        self._highlights[key] = html
        self._highlights_size += len(key[1])

    def _lexer(self, language: str) -> Lexer | None:
        """Pygments' lexer for a fence's language name, or None: no guessing from the code."""
        key = language.lower()
        if key not in self._lexers:
            if len(self._lexers) >= _LEXERS_KEPT:
                self._lexers.clear()
            try:
                self._lexers[key] = get_lexer_by_name(key, stripnl=False, stripall=False, ensurenl=False)
            except ClassNotFound:
                self._lexers[key] = None
        return self._lexers[key]

    def _highlight(self, code: str, language: str, _attrs: str) -> str:
        """The code as escaped HTML with ``hl-*`` spans (markdown-it's ``highlight`` option); '' leaves it plain."""
        lexer = self._lexer(language) if language and len(code) <= HIGHLIGHT_LIMIT else None
        if lexer is None:
            return ""
        key = (language.lower(), code)
        if key not in self._highlights:
            self._keep(key, self._spans(code, lexer))
        return self._highlights[key]

    def _spans(self, code: str, lexer: Lexer) -> str:
        out: list[str] = []
        run_class: str | None = None
        run: list[str] = []
        for ttype, value in lex(code, lexer):
            name = _class_of(ttype, self._classes) if value.strip() else run_class  # whitespace joins the run it is in
            if name != run_class and run:
                text = escapeHtml("".join(run))
                out.append(f'<span class="{run_class}">{text}</span>' if run_class else text)
                run = []
            run_class = name
            run.append(value)
        if run:
            text = escapeHtml("".join(run))
            out.append(f'<span class="{run_class}">{text}</span>' if run_class else text)
        return "".join(out)

    def _fence(self, token: Token) -> str:
        """A code block: highlighted when its language is known, with a header and Copy button for the chat."""
        info = unescapeAll(token.info).strip() if token.info else ""
        language = info.split(maxsplit=1)[0] if info else ""
        body = self._highlight(token.content, language, "") or escapeHtml(token.content)
        pre = f"<pre><code>{body}</code></pre>\n"
        if not self._code_tools:
            return pre
        label = escapeHtml(language[:40]) or "code"
        return (
            f'<div class="code-block"><div class="code-head"><span class="code-lang">{label}</span>'
            f'<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>{pre}</div>\n'
        )

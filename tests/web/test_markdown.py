"""Answers' Markdown, issue 15: code highlighted into hl-* classes, a header with a Copy button around each code block
in the chat (never forgeable by the answer), sane output mid-stream, and the answer re-rendered while it streams."""

from __future__ import annotations

import html as html_lib
import re

import pytest

from minigate.web.chat_stream import RENDER_EVERY, render_due
from minigate.web.markdown import HIGHLIGHT_LIMIT, MarkdownRenderer
from tests.fakes.upstream import FakeUpstream, Reply
from tests.web.blocks import bodies
from tests.web.helpers import WebClient, sse_data

pytestmark = pytest.mark.fast

CHAT = MarkdownRenderer(code_tools=True)
PLAIN = MarkdownRenderer()
CODE = "def f(x):\n    return '<b>' + 1  # done\n"


def _text(html: str) -> str:
    """The text a reader sees: tags gone, entities decoded as the browser would."""
    text = re.sub(r"<[^>]*>", "", html)
    return html_lib.unescape(text)


def test_a_fenced_block_is_highlighted_with_classes_only() -> None:
    html = str(CHAT.render(f"Look:\n\n```python\n{CODE}```\n"))
    assert '<span class="hl-k">def </span><span class="hl-f">f</span>' in html
    assert '<span class="hl-s">' in html and '<span class="hl-c"># done' in html
    assert "style=" not in html
    code = html.split("<pre><code>", 1)[1].split("</code></pre>", 1)[0]
    assert _text(code) == CODE  # highlighting changes no character of the code


def test_the_chat_wraps_code_in_a_header_with_the_language_and_a_copy_button() -> None:
    html = str(CHAT.render(f"```python\n{CODE}```"))
    assert html.startswith(
        '<div class="code-block"><div class="code-head"><span class="code-lang">python</span>'
        '<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div><pre><code>'
    )
    indented = str(CHAT.render("Text\n\n    indented code\n"))
    assert '<span class="code-lang">code</span>' in indented and "copy-code" in indented
    # A workflow's HTML (no page script) keeps plain code blocks.
    assert str(PLAIN.render(f"```python\n{CODE}```")).startswith('<pre><code><span class="hl-k">')


@pytest.mark.parametrize("fence", ["```\nx = 1 < 2\n```", "```made-up-lang\nx = 1 < 2\n```", "~~~\nx = 1 < 2\n~~~"])
def test_unknown_or_missing_language_is_plain_code(fence: str) -> None:
    html = str(CHAT.render(fence))
    assert "<pre><code>x = 1 &lt; 2\n</code></pre>" in html
    assert "hl-" not in html  # no guessing from the code


def test_a_huge_block_is_not_highlighted() -> None:
    big = "x = 1\n" * (HIGHLIGHT_LIMIT // 6 + 1)
    html = str(CHAT.render(f"```python\n{big}```"))
    assert "hl-" not in html and html.count("x = 1") == big.count("x = 1")
    assert "hl-m" in str(CHAT.render("```python\nx = 1\n```"))


def test_the_answer_cannot_forge_the_markup_the_renderer_writes() -> None:
    forged = (
        '<div class="code-block"><button type="button" class="copy-code" onclick="alert(1)">Copy</button></div>\n\n'
        '<span class="hl-k">x</span> <template class="msg-source">y</template>\n\n'
        "```python\n</code></pre><button class=copy-code>x</button>\n```\n\n"
        '```"><script>alert(1)</script>\nx\n```'
    )
    html = str(CHAT.render(forged))
    tags = re.findall(r"<[^>]*>", html)
    assert not [t for t in tags if re.search(r"onclick|<script|<template|class=copy-code", t)], tags
    assert html.count("<button") == 2  # the two real code blocks' own buttons, nothing else
    assert not [t for t in tags if "hl-k" in t]
    assert "&lt;/code&gt;&lt;/pre&gt;" in html


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("Here:\n\n```python\ndef f(", '<span class="hl-k">def </span><span class="hl-f">f</span>('),  # open fence
        ("Here:\n\n```pyth", '<span class="code-lang">pyth</span>'),  # half a language name: plain, still a block
        ("A **bold", "<p>A **bold</p>"),  # unclosed emphasis shows as typed, closes on the next render
        ("| a | b |\n|---|", "<p>| a | b |\n|---|</p>"),
    ],
)
def test_an_answer_cut_mid_stream_renders_sanely(partial: str, expected: str) -> None:
    html = str(CHAT.render(partial))
    assert expected in html
    assert html.count("<div") == html.count("</div>")


def test_renders_are_throttled() -> None:
    assert render_due(10.0, None, 0.0)  # the first piece shows at once
    assert not render_due(10.0 + RENDER_EVERY / 2, 10.0, 0.001)
    assert render_due(10.0 + RENDER_EVERY, 10.0, 0.001)
    assert not render_due(10.0 + RENDER_EVERY, 10.0, 0.05)  # a render of 50 ms waits 0.5 s for the next
    assert render_due(10.5, 10.0, 0.05)


def test_the_answer_streams_as_rendered_markdown(client: WebClient, remote: FakeUpstream) -> None:
    answer = f"Intro **bold** text\n\n```python\n{CODE}```\n\nand after " + " ".join(f"w{i}" for i in range(8))
    remote.set_default(Reply(content=answer, interval=RENDER_EVERY + 0.02))  # each word its own render
    conversation = client.new_chat("remote")
    events = sse_data(client.send(conversation, "go"))
    renders = bodies(events, int(re.findall(r'id="msg-(\d+)-text"', events[0])[-1]))  # the body after each event
    assert not [e for e in events if 'hx-swap="beforeend"' in e]
    assert len(renders) >= 10
    assert renders[0] == "<p>Intro</p>\n"  # the first word at once
    mid = next(r for r in renders if "```" not in r and "hl-k" in r and "w0" not in r)
    assert "<strong>bold</strong>" in mid and '<button type="button" class="copy-code"' in mid
    assert '<span class="code-lang">python</span>' in mid
    assert "copy-code" in events[-1] and "<strong>bold</strong>" in events[-1]
    page = client.get(f"/chat/{conversation}").text
    stored = page.split('<div class="body md" hx-ignore>', 1)[1].split("</article>", 1)[0]
    final = events[-1].split('<div class="body md" hx-ignore>', 1)[1].split("</article>", 1)[0]
    assert stored == final  # a reload renders the same


def test_a_message_keeps_its_markdown_source_for_copy(client: WebClient, remote: FakeUpstream) -> None:
    answer = "Some **bold** and `code` <b>here</b> & there\n\n```python\nx = 1\n```"
    remote.set_default(Reply(content=answer))
    conversation = client.new_chat("remote")
    client.send(conversation, "a <question> & **stars**")
    page = client.get(f"/chat/{conversation}").text
    assert page.count('class="copy-msg"') == 2  # the user's message and the answer
    source = page.split('<template class="msg-source">', 1)[1].split("</template>", 1)[0]
    assert _text(source) == answer and "<b>" not in source  # escaped: inert text
    assert '<div class="body plain">a &lt;question&gt; &amp; **stars**</div>' in page


@pytest.mark.parametrize(
    "text",
    ["Price $5 and $10 today", "costs $5-$10 each", "$HOME and $PATH", "It is $ 5 $", "a `$x$` span", "\\$x\\$"],
)
def test_dollar_amounts_and_code_are_not_math(text: str) -> None:
    assert "<math" not in str(CHAT.render(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Euler: $e^{i\\pi}+1=0$.", '<math display="inline"><mrow><msup><mi>e</mi>'),
        ("Index \\(x_1\\) here", '<math display="inline"><mrow><msub><mi>x</mi><mn>1</mn></msub></mrow></math>'),
        ("It costs $5 and $x$ is", "It costs $5 and <math"),
        ("$$\n\\frac{a}{b}\n$$", '<div class="math-block"><math display="block"><mrow><mfrac>'),
        ("Then\n\\[ a^2 + b^2 = c^2 \\]\nend", '<div class="math-block"><math display="block"><mrow><msup><mi>a</mi>'),
    ],
)
def test_latex_becomes_mathml(text: str, expected: str) -> None:
    assert expected in str(CHAT.render(text))


def test_math_is_sanitised_and_bad_latex_shows_its_source() -> None:
    html = str(CHAT.render("$\\href{javascript:alert(1)}{x}\\color{red}{y}\\text{<img src=x onerror=alert(1)>}$"))
    assert "<math" in html and "javascript" not in html and "mathcolor" not in html and "<img" not in html
    assert '<code class="math-source">$\\frac{$</code>' in str(CHAT.render("Bad $\\frac{$ x"))
    assert "<math" not in str(CHAT.render("$" + "x" * 5000 + "$"))  # too long: its source
    # Mid-stream, an unclosed formula shows as typed, then becomes math.
    assert str(CHAT.render("So $$\n\\frac{a")) == "<p>So $$\n\\frac{a</p>\n"

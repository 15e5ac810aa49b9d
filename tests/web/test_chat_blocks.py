"""A streaming answer sends only its blocks that changed: the updates rebuild exactly the whole render at every step
(code blocks opened and closed mid-stream, lists growing, tables, math, blocks that merge back), and sanitising
block by block gives what sanitising the whole answer gives."""

from __future__ import annotations

import random
import re

import pytest

from minigate.web.chat_stream import RENDER_EVERY, block_update
from minigate.web.markdown import Blocks, MarkdownRenderer
from tests.fakes.upstream import FakeUpstream, Reply
from tests.web.blocks import UPDATE, apply_update, bodies, top_level
from tests.web.helpers import WebClient, sse_data
from tests.web.test_security import PAYLOADS

pytestmark = pytest.mark.fast

CHAT = MarkdownRenderer(code_tools=True)
CODE = '```python\ndef f(x):\n    """Twice."""\n    return 2 * x  # done\n```\n'
ANSWERS = {
    "code opened and closed": f"Look at this:\n\n{CODE}\nand then\n```js\nlet a = 1\n```\n\nafter the code.",
    "list growing": "Steps:\n\n1. Install it.\n2. Write the config:\n   - `port`\n   - `models`\n3. Run it.\n\nDone.",
    "table": "| name | value |\n|---|---:|\n| a | 1 |\n| **b** | 2 |\n\nA table, then text.",
    "math": "Euler $e^{i\\pi}+1=0$ holds.\n\n$$\n\\frac{a}{b}\n$$\n\n\\[ x^2 \\]\nand $5 or $10.",
    "blocks that merge back": "text\n```a`\nmore\n#x\n- a\n\n---\nSetext\n===\n> quote\nlazy\n\n    indented\n",
    "late reference": 'See [the docs][d] and [x].\n\n- one\n- two\n\n[d]: https://example.com "<p>title>"\n',
    "hostile": "\n\n".join(PAYLOADS.values()),
}


def _sanitised_whole(text: str) -> str:
    """The answer sanitised in one piece, how it was rendered before blocks: markdown-it's HTML, one nh3 call."""
    return CHAT.sanitise(CHAT.markup(text))


def _random_markdown(rng: random.Random) -> str:
    atoms = ["a", " ", "\n", "\n\n", "*", "**", "`", "```", "```py\n", "$", "$$", "\\[", "\\]", "|", "---", "- ",
             "1. ", "> ", "#", "[", "]", "(", ")", "http://x", "<", ">", "&", "    ", "~~", "_", "\\", "![", "é",
             "<script>", '"', "&amp;", "\r\n", "\x00", "[r]: /u\n"]  # fmt: skip
    return "".join(rng.choice(atoms) for _ in range(rng.randint(1, 50)))


def test_sanitising_block_by_block_gives_the_whole_answer_sanitised() -> None:
    rng = random.Random(15)
    texts = [*ANSWERS.values(), *(_random_markdown(rng) for _ in range(150))]
    for text in texts:
        for cut in range(0, len(text) + 1, max(1, len(text) // 40)):
            part = text[:cut]
            blocks = CHAT.blocks(part)
            assert str(CHAT.render(part)) == "".join(blocks.html) == _sanitised_whole(part), part
            assert [top_level(html) for html in blocks.html] == [[html] for html in blocks.html]  # one element each


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_updates_rebuild_the_whole_render_at_every_step(answer: str) -> None:
    shown, body, sent = Blocks(), list[str](), 0
    for cut in range(1, len(answer) + 1):  # a character at a time: every state the answer passes through
        part = answer[:cut]
        rendered = CHAT.blocks(part, shown)
        assert rendered.html == CHAT.blocks(part).html  # the blocks kept from the last render are still right
        update = block_update(3, shown.html, rendered.html)
        if update is None:
            assert rendered.html == shown.html
        else:
            match = UPDATE.fullmatch(update)
            assert match is not None and match[1] == "3"
            body = apply_update(body, int(match[2]), match[3])
            sent += len(update)
        assert "".join(body) == str(CHAT.render(part)), part
        shown = rendered


def test_a_long_answer_sends_its_tail_not_all_of_it() -> None:
    answer = "\n\n".join(f"Paragraph {i} with **bold** and `code`.\n\n{CODE}" for i in range(20))
    shown, whole, sent = Blocks(), 0, 0
    for cut in range(0, len(answer) + 1, 8):
        rendered = CHAT.blocks(answer[:cut], shown)
        update = block_update(3, shown.html, rendered.html) or ""
        keep = int(UPDATE.fullmatch(update)[2]) if update else len(rendered.html)  # type: ignore[index]
        assert keep >= len(rendered.html) - 2  # at most the growing block and the one before it are sent again
        whole, sent, shown = whole + len("".join(rendered.html)), sent + len(update), rendered
    assert sent * 10 < whole


def test_blocks_that_disappear_are_removed() -> None:
    before = CHAT.blocks("text\n```")  # a paragraph and an empty code block
    after = CHAT.blocks("text\n```a`")  # no fence (a backtick in its info string): one paragraph
    assert len(before.html) == 2 and len(after.html) == 1
    update = block_update(3, before.html, after.html)
    assert update is not None and 'hx-swap="blocks keep:0"' in update
    assert apply_update(top_level("".join(before.html)), 0, UPDATE.fullmatch(update)[3]) == list(after.html)  # type: ignore[index]
    assert block_update(3, after.html, CHAT.blocks("text\n```a`").html) is None  # nothing new: nothing sent
    emptied = block_update(3, before.html, ())
    assert emptied is not None and emptied.endswith('hx-swap="blocks keep:0"></hx-partial>')


def test_the_streamed_updates_rebuild_the_answer_over_http(client: WebClient, remote: FakeUpstream) -> None:
    answer = "\n\n".join(ANSWERS[name] for name in ("code opened and closed", "list growing", "table", "math"))
    remote.set_default(Reply(content=answer, interval=RENDER_EVERY / 2))  # about a render every other word
    conversation = client.new_chat("remote")
    events = sse_data(client.send(conversation, "go"))
    message = int(re.findall(r'id="msg-(\d+)-text"', events[0])[-1])
    prefixes = [i for i, c in enumerate(answer) if c == " "] + [len(answer)]  # where the fake's words end
    renders = {str(CHAT.render(answer[:end])): n for n, end in enumerate(prefixes)}
    steps = [renders.get(body) for body in bodies(events, message)]
    assert None not in steps, "an update left the body unlike any render of the answer so far"
    assert steps == sorted(steps) and len(steps) >= len(prefixes) // 4
    updates = [e for e in events if UPDATE.fullmatch(e)]
    blocks = len(CHAT.blocks(answer).html)
    assert blocks > 10 and max(int(UPDATE.fullmatch(e)[2]) for e in updates) >= blocks - 2  # type: ignore[index]
    whole = f'<div class="body md" hx-ignore>{CHAT.render(answer)}</div>'
    assert whole in events[-1]  # the final event: the whole answer rendered at once, as stored
    assert whole in client.get(f"/chat/{conversation}").text  # and as a reload shows it

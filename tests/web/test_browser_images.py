"""Images in the chat, in a real browser (issue 15): paste and Attach add thumbnails, the image goes to the model as
an OpenAI image part and shows in the message; a model that does not take images is named and nothing is sent."""

from __future__ import annotations

import base64
import struct
import zlib

from playwright.sync_api import FilePayload, Page, expect

from tests.fakes.upstream import FakeUpstream, Reply
from tests.web.browser import shoot, start_chat


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain PNG of one colour with a darker diagonal band (so a thumbnail shows something)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    dark = bytes(c // 2 for c in rgb)
    rows = b"".join(
        b"\x00" + b"".join(dark if abs(x - y) < width // 6 else bytes(rgb) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


BLUE = png(96, 64, (60, 110, 220))
ORANGE = png(64, 64, (240, 150, 40))


def file(name: str, kind: str, data: bytes) -> FilePayload:
    """A file for the Attach input, as the browser's file picker gives it."""
    return {"name": name, "mimeType": kind, "buffer": data}


def paste(tab: Page, data: bytes, name: str = "") -> None:
    """Paste ``data`` as a PNG into the message box, as a screenshot tool's copy would."""
    tab.evaluate(
        """([b64, name]) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name || "image.png", {type: "image/png"}));
          const box = document.getElementById("content");
          box.focus();
          box.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(data).decode(), name],
    )


def test_paste_and_attach_send_images_to_the_model(page: Page, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="A blue picture."))
    start_chat(page, "remote")
    paste(page, BLUE, "blue.png")
    thumbs = page.locator("#attach-thumbs img")
    expect(thumbs).to_have_count(1)
    page.locator("#attach-input").set_input_files([file("orange.png", "image/png", ORANGE)])
    expect(thumbs).to_have_count(2)  # Attach adds to the pasted one
    expect(page.locator("#attach-note")).to_be_hidden()
    shoot(page, "images-composer")
    page.emulate_media(color_scheme="dark")
    shoot(page, "images-composer-dark")
    page.emulate_media(color_scheme="light")
    page.get_by_role("button", name="Remove orange.png").click()
    expect(thumbs).to_have_count(1)

    page.get_by_label("Message", exact=True).fill("What colour is this?")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".msg-assistant .md")).to_contain_text("A blue picture.")
    expect(thumbs).to_have_count(0)  # sent with the message
    sent = remote.requests[-1].body
    assert sent is not None
    assert sent["messages"][-1]["content"] == [
        {"type": "text", "text": "What colour is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(BLUE).decode()}},
    ]
    shown = page.locator(".msg-user .msg-images img")
    expect(shown).to_have_count(1)
    page.wait_for_function("() => document.querySelector('.msg-user .msg-images img').naturalWidth === 96")
    shoot(page, "images-sent")
    with page.context.expect_page() as opened:
        shown.click()  # full size, in a tab of its own
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.evaluate("() => document.images.length && document.images[0].naturalWidth") == 96
    tab.close()


def test_a_text_only_model_says_so_and_sends_nothing(page: Page, remote: FakeUpstream) -> None:
    start_chat(page, "default")  # the fake echo model reads text only
    page.get_by_label("Message", exact=True).fill("What is this?")
    paste(page, BLUE)
    note = page.locator("#attach-note")
    expect(note).to_have_text("default does not take images: remove them, or choose a model that does.")
    send = page.get_by_role("button", name="Send", exact=True)
    expect(send).to_be_disabled()
    page.get_by_label("Message", exact=True).press("Enter")  # Enter does not get round it
    page.wait_for_timeout(300)
    expect(page.locator("#messages .msg")).to_have_count(0)
    shoot(page, "images-refused")

    picker = page.locator('select[name="model"][form="composer"]')
    picker.select_option("remote")  # a model that takes images: the note goes, Send comes back
    expect(note).to_be_hidden()
    expect(send).to_be_enabled()
    picker.select_option("default")
    expect(send).to_be_disabled()
    page.get_by_role("button", name="Remove image.png").click()  # or the image goes
    expect(note).to_be_hidden()
    expect(send).to_be_enabled()
    assert remote.requests == []


def test_files_that_are_not_images_are_refused_in_the_page(page: Page) -> None:
    start_chat(page, "remote")
    files = [file("notes.txt", "text/plain", b"hello"), *(file(f"{n}.png", "image/png", BLUE) for n in range(5))]
    page.locator("#attach-input").set_input_files(files)
    expect(page.locator("#attach-thumbs img")).to_have_count(4)
    expect(page.locator("#attach-note")).to_have_text(
        "notes.txt is not a PNG, JPEG, WebP or GIF image; at most 4 images go with a message."
    )

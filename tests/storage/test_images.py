"""ImageStore on SQLite and PostgreSQL: kinds recognised by their bytes, reads scoped by owner, gone with their
conversation or message."""

from __future__ import annotations

import pytest

from minigate.gateway.storage import ConversationStore, Database
from minigate.gateway.storage.images import ImageStore, sniff_image
from tests.storage.conftest import Backend

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)
GIF = b"GIF89a" + bytes(20)
WEBP = b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(20)


def test_sniff_reads_the_bytes_not_a_name() -> None:
    assert [sniff_image(d) for d in (PNG, JPEG, GIF, WEBP)] == ["image/png", "image/jpeg", "image/gif", "image/webp"]
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for other in (svg, b"", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"%PDF-1.7", b"\x89PNG"):
        assert sniff_image(other) is None


async def test_images_of_messages(db: Database, backend: Backend) -> None:
    conversations, images = ConversationStore(db), ImageStore(db)
    mine = await conversations.create("admin", title="Mine", model="remote")
    theirs = await conversations.create("guest:abc", title="Theirs", model="remote")
    first = await conversations.add_message(mine, "user", "What is this?")
    second = await conversations.add_message(mine, "user", "And this?")
    other = await conversations.add_message(theirs, "user", "Theirs")
    a, b = await images.add(first.id, [PNG, JPEG])
    (c,) = await images.add(second.id, [GIF])
    (d,) = await images.add(other.id, [WEBP])
    with pytest.raises(ValueError):
        await images.add(first.id, [b"<svg/>"])

    by_message = await images.for_conversation(mine)
    assert sorted(by_message) == [first.id, second.id]
    stored = [(i.id, i.media_type, i.data) for i in by_message[first.id]]
    assert stored == [(a, "image/png", PNG), (b, "image/jpeg", JPEG)]
    assert await images.ids(mine) == {first.id: [a, b], second.id: [c]}

    got = await images.get("admin", mine, b)
    assert got is not None and (got.media_type, got.data) == ("image/jpeg", JPEG)
    assert await images.get("guest:abc", mine, b) is None  # another owner
    assert await images.get("admin", theirs, d) is None  # not the owner's conversation
    assert await images.get("admin", mine, d) is None  # another conversation's image

    assert await conversations.delete("admin", mine)  # its images go along
    assert backend.count("message_images") == 1  # only the other owner's is left
    assert await images.get("guest:abc", theirs, d) is not None

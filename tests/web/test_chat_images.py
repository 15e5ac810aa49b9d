"""Images in the chat over HTTP (bypassing the page): sent to the model as OpenAI image parts, refused before any
upstream call when the model does not take them or the files are not images, served only to their owner."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from tests.fakes.upstream import FakeUpstream, Reply
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient, web_config

# A real 1x1 PNG and the start of a JPEG (the server reads the first bytes, not the name or declared type).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def send(web: WebClient, conversation: int, content: str, files: list[tuple[str, bytes, str]]) -> Any:
    """Post the composer's multipart form as htmx does, with ``files`` as ``(name, bytes, declared type)``."""
    parts = [("images", (name, data, kind)) for name, data, kind in files]
    fields = {"content": content, "_csrf": web.csrf or ""}
    return web.http.post(f"/chat/{conversation}/send", data=fields, files=parts, headers={"hx-request": "true"})


def data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def test_images_go_to_the_model_as_image_url_parts(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="A cat."))
    conversation = client.new_chat(model="remote")
    answer = send(client, conversation, "What is this?", [("cat.png", PNG, "image/png"), ("b.jpg", JPEG, "image/jpeg")])
    assert answer.status_code == 200, answer.text
    sent = remote.requests[-1].body
    assert sent is not None
    assert sent["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
            {"type": "image_url", "image_url": {"url": data_url("image/jpeg", JPEG)}},
        ],
    }
    shown = re.findall(rf'<img src="/chat/{conversation}/images/(\d+)"', answer.text)  # the thumbnails, at once
    assert len(shown) == 2
    page = client.get(f"/chat/{conversation}").text
    assert re.findall(rf'<img src="/chat/{conversation}/images/(\d+)"', page) == shown

    image = client.get(f"/chat/{conversation}/images/{shown[0]}")
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert image.headers["content-security-policy"] == "default-src 'none'"
    assert client.get(f"/chat/{conversation}/images/{shown[1]}").headers["content-type"] == "image/jpeg"

    regenerate = client.http.post(  # the composer's images come along with Regenerate too; it ignores them
        f"/chat/{conversation}/regenerate", data={"_csrf": client.csrf or ""},
        files=[("images", (f"{n}.png", PNG + bytes(4_000_000), "image/png")) for n in range(3)],
        headers={"hx-request": "true"},
    )  # fmt: skip
    assert regenerate.status_code == 200, regenerate.text
    client.send(conversation, "And now?")  # a later message: the earlier one is sent with its images again
    later = remote.requests[-1].body
    assert later is not None
    assert later["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}
    assert later["messages"][-1] == {"role": "user", "content": "And now?"}


def _vision_off(remote: FakeUpstream) -> dict[str, Any]:
    config = web_config(remote)
    config["models"]["providers"]["remote"]["vision"] = False
    return config


def test_a_model_without_images_refuses_them_before_any_call(
    inprocess_factory: Callable[..., InProcessGateway], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
    web = WebClient(inprocess_factory(_vision_off(remote)))
    web.login()
    for model in ("remote", "default"):  # a provider section's vision: false; the fake type reads text only
        conversation = web.new_chat(model=model)
        refused = send(web, conversation, "What is this?", [("cat.png", PNG, "image/png")])
        assert refused.status_code == 400
        assert refused.text == f"{model} does not take images: remove them, or choose a model that does."
        assert refused.headers["hx-reswap"] == "none"
        assert "What is this?" not in web.get(f"/chat/{conversation}").text  # nothing stored
    big = [(f"{n}.png", PNG + bytes(4_000_000), "image/png") for n in range(3)]  # 12 MB: above max_body_bytes
    refused = send(web, web.new_chat(model="default"), "Three", big)
    assert (refused.status_code, refused.text[:28]) == (400, "default does not take images")  # read, not a 413
    assert remote.requests == []  # nothing reached the upstream
    page = web.get("/chat").text
    assert re.search(r"data-vision-models='\[\]'", page)  # the page knows before sending
    web.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("notes.png", b"just some text", "image/png")], "notes.png is not a PNG, JPEG, WebP or GIF image."),
        ([("logo.svg", SVG, "image/svg+xml")], "logo.svg is not a PNG, JPEG, WebP or GIF image."),
        ([("big.png", PNG + bytes(5_000_000), "image/png")], "big.png is larger than 5 MB: attach a smaller image."),
        ([(f"{i}.png", PNG, "image/png") for i in range(5)], "Attach at most 4 images to a message."),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(
    client: WebClient, remote: FakeUpstream, files: list[tuple[str, bytes, str]], message: str
) -> None:
    conversation = client.new_chat(model="remote")
    refused = send(client, conversation, "Look", files)
    assert (refused.status_code, refused.text) == (400, message)
    assert remote.requests == []


def test_the_page_names_the_models_that_take_images(client: WebClient) -> None:
    page = client.get("/chat").text
    names = re.search(r"data-vision-models='([^']*)'", page)
    assert names is not None
    # remote types: unknown, so allowed (the upstream decides); the fake type and agents over it: text only
    assert set(re.findall(r'"([^"]+)"', names.group(1))) == {"remote", "remote/gpt-4o-mini"}
    assert 'name="images"' in page and 'enctype="multipart/form-data"' in page


def test_images_are_their_owners_only(
    inprocess_factory: Callable[..., InProcessGateway], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("MINIGATE_CHAT_PUBLIC", "1")
    server = inprocess_factory(web_config(remote))
    guest = WebClient(server)
    guest.get("/chat")
    guest.refresh_csrf()
    conversation = guest.new_chat(model="remote")
    answer = send(guest, conversation, "Mine", [("cat.png", PNG, "image/png")])
    image_id = re.findall(rf'/chat/{conversation}/images/(\d+)"', answer.text)[0]
    assert guest.get(f"/chat/{conversation}/images/{image_id}").content == PNG
    admin, other = WebClient(server), WebClient(server)
    admin.login()
    other.get("/chat")  # another guest
    for web in (admin, other):
        assert web.get(f"/chat/{conversation}/images/{image_id}").status_code == 404
    assert guest.get(f"/chat/{conversation}/images/{int(image_id) + 1}").status_code == 404
    assert guest.post(f"/chat/{conversation}/delete").status_code == 303
    assert guest.get(f"/chat/{conversation}/images/{image_id}").status_code == 404  # gone with it
    for web in (guest, admin, other):
        web.close()


def test_the_vision_key_of_a_provider_section() -> None:
    base = {"models": {"providers": {"up": {"endpoint": "https://api.example.com/v1", "models": ["a", "b"]}}}}
    config = configure(base, builtin_extensions(), env={})
    assert config.takes_images("up", "a") is None  # unknown: the upstream decides
    base["models"]["providers"]["up"]["vision"] = ["b"]
    config = configure(base, builtin_extensions(), env={})
    assert (config.takes_images("up", "a"), config.takes_images("up", "b")) == (False, True)
    base["models"]["providers"]["up"]["vision"] = "yes"
    with pytest.raises(ConfigError) as err:
        configure(base, builtin_extensions(), env={})
    assert "models.providers.up.vision: must be true, false or a list" in str(err.value)


def test_a_first_message_on_a_new_chat_takes_images(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="Blue."))
    files = [("images", ("cat.png", PNG, "image/png"))]

    def first(model: str) -> Any:
        fields = {"content": "What is this?", "conversation": "", "model": model, "_csrf": client.csrf or ""}
        return client.http.post("/chat/send", data=fields, files=files, headers={"hx-request": "true"})

    before = client.get("/chat").text.count('<span class="title">')
    refused = first("default")  # the default agent reads text only: no conversation is left behind
    assert (refused.status_code, refused.text[:28]) == (400, "default does not take images")
    assert client.get("/chat").text.count('<span class="title">') == before
    assert first("remote").status_code == 200
    assert client.get("/chat").text.count('<span class="title">') == before + 1
    sent = remote.requests[-1].body
    assert sent is not None and sent["messages"][-1]["content"][1]["image_url"]["url"] == data_url("image/png", PNG)


def test_flipping_versions_keeps_the_thumbnails(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="Blue."))
    conversation = client.new_chat(model="remote")
    send(client, conversation, "What is this?", [("cat.png", PNG, "image/png")])
    client.post(f"/chat/{conversation}/regenerate", htmx=True)  # a second version of the answer
    first_answer = re.findall(r'id="msg-(\d+)"', client.get(f"/chat/{conversation}").text)[1]
    flipped = client.post(f"/chat/{conversation}/messages/{int(first_answer) - 1}/show", htmx=True)
    assert flipped.status_code == 200
    assert len(re.findall(rf'<img src="/chat/{conversation}/images/\d+"', flipped.text)) == 1


def test_an_edited_message_keeps_its_images(client: WebClient, remote: FakeUpstream) -> None:
    remote.set_default(Reply(content="A cat."))
    conversation = client.new_chat(model="remote")
    send(client, conversation, "What is this?", [("cat.png", PNG, "image/png")])
    first = int(re.findall(r'id="msg-(\d+)"', client.get(f"/chat/{conversation}").text)[0])
    edited = client.post("/chat/edit", {"message": str(first), f"content-{first}": "And what colour?"}, htmx=True)
    assert edited.status_code == 200, edited.text
    sent = remote.requests[-1].body
    assert sent is not None and sent["messages"][-1]["content"] == [
        {"type": "text", "text": "And what colour?"},
        {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
    ]
    client.post(f"/chat/{conversation}/settings", {"model": "default"}, htmx=True)  # a model without images
    calls = len(remote.requests)
    refused = client.post("/chat/edit", {"message": str(first), f"content-{first}": "Once more"}, htmx=True)
    assert refused.status_code == 400 and "default does not take images" in refused.text
    assert len(remote.requests) == calls

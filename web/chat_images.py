"""Images in the chat: which models take them, reading a message's uploaded images, and serving stored ones.

A model takes images when its primary deployment does (``Config.takes_images``: a provider section's ``vision``
key, else its type's default; unknown counts as yes, the upstream then decides). Uploads are refused before
anything is stored or sent: more than :data:`MAX_IMAGES`, larger than :data:`MAX_IMAGE_BYTES`, or bytes that are
not PNG, JPEG, WebP or GIF.
"""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.images import IMAGE_TYPES, ImageStore, sniff_image
from minigate.web.render import error_page
from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = [
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "SEND_BODY_LIMIT",
    "ImageRefused",
    "image_handlers",
    "read_images",
    "takes_images",
    "vision_models",
]

MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5_000_000
# The send route's request body: every image at its largest, plus the message and the form around it. Above
# ``server.max_body_bytes`` (8 MiB by default), which stays the limit of every other route.
SEND_BODY_LIMIT = MAX_IMAGES * MAX_IMAGE_BYTES + 1_000_000
# Stored images never change under their address; the page's CSP does not apply to an image opened on its own.
_IMAGE_HEADERS = {
    "cache-control": "private, max-age=31536000, immutable",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'",
}


class ImageRefused(Exception):
    """The images of a message cannot be taken; the message says why, for the person who sent them."""


def takes_images(gateway: Gateway, name: str) -> bool:
    """Whether a chat with ``name`` (agent, alias or ``provider/model``) may send images: its primary takes them."""
    route = gateway.routes.resolve(name)
    if route is None or not route.chain:
        return False
    primary = route.chain[0]
    return gateway.config.takes_images(primary.provider, primary.model) is not False


def vision_models(gateway: Gateway) -> list[str]:
    """The names of the model picker that take images (for the page: it warns before sending to one that does not)."""
    return [ident for ident, _, _ in gateway.routes.listing() if takes_images(gateway, ident)]


async def read_images(form: Any, gateway: Gateway, model: str) -> list[bytes]:
    """The ``images`` files of a send form, checked; raises :class:`ImageRefused` before anything is kept."""
    files: list[UploadFile] = []
    for value in form.getall("images", []) if hasattr(form, "getall") else []:
        if isinstance(value, UploadFile):
            files.append(value)
        elif value:  # a form sent without multipart/form-data carries only the file's name
            raise ImageRefused("Images must be sent as files of a multipart/form-data form.")
    images: list[bytes] = []
    for upload in files:
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        if not data and not upload.filename:
            continue  # the empty part a browser sends for a file input with nothing chosen
        images.append(_checked(data, upload.filename or "an image"))
    if len(images) > MAX_IMAGES:
        raise ImageRefused(f"Attach at most {MAX_IMAGES} images to a message.")
    if images and not takes_images(gateway, model):
        raise ImageRefused(f"{model} does not take images: remove them, or choose a model that does.")
    return images


def _checked(data: bytes, name: str) -> bytes:
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRefused(f"{name} is larger than {MAX_IMAGE_BYTES // 1_000_000} MB: attach a smaller image.")
    if sniff_image(data) is None:
        raise ImageRefused(f"{name} is not a PNG, JPEG, WebP or GIF image.")
    return data


@get("/chat/{conversation_id:int}/images/{image_id:int}")
async def chat_image(
    gateway: NamedDependency[Gateway],
    web: NamedDependency[WebState],
    chat_user: NamedDependency[Session],
    conversation_id: FromPath[int],
    image_id: FromPath[int],
) -> Response[Any]:
    """One image of a message of the session's own conversations, as it was sent (never anything else)."""
    image = await ImageStore(gateway.database).get(chat_user.owner, conversation_id, image_id)
    if image is None or image.media_type not in IMAGE_TYPES:
        return error_page(web, 404, "There is no such image.")
    return Response(image.data, media_type=image.media_type, headers=_IMAGE_HEADERS)


def image_handlers() -> list[Any]:
    """The image routes of the chat."""
    return [chat_image]

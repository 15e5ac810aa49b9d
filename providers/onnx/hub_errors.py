"""What huggingface_hub's and the network's exceptions mean for a pull, in words a user can act on."""

from __future__ import annotations

import os
from typing import Any, Protocol

from minigate.providers.onnx.tools import DownloadError, SourceError

__all__ = ["HubSourceLike", "translate"]


class HubSourceLike(Protocol):
    """What a message needs of the pulled repository (``minigate.providers.onnx.hub.HubSource`` is one): its name,
    revision, and ``str()`` for both."""

    @property
    def repo(self) -> str: ...

    @property
    def revision(self) -> str | None: ...


_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "TimeoutException",
    "NetworkError",
    "ReadError",
    "WriteError",
    "ProxyError",
    "RemoteProtocolError",
    "ConnectionError",
    "SSLError",
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_network(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & _NETWORK_ERRORS or isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def translate(exc: BaseException, errors: Any, source: HubSourceLike, hub: str) -> Exception | None:
    """The :class:`SourceError` or :class:`DownloadError` that says what ``exc`` means, or None if unknown.

    ``errors`` is ``huggingface_hub.errors`` (imported by the caller, only when pulling); ``hub`` names the
    hub for messages.
    """
    token_hint = (
        "the token in HF_TOKEN may have no access to it"
        if os.environ.get("HF_TOKEN")
        else "a private or gated repository needs HF_TOKEN"
    )
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return DownloadError(
            f"cannot pull {source}: offline mode is on (unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE)"
        )
    if isinstance(exc, errors.GatedRepoError):
        return SourceError(
            f"{source.repo} is gated: accept its conditions on its hub page, then set HF_TOKEN to a token of "
            f"that account ({_first_line(exc)})"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return SourceError(f"repository {source.repo} not found on {hub} ({token_hint})")
    if isinstance(exc, errors.RevisionNotFoundError):
        return SourceError(f"revision {source.revision!r} not found in {source.repo}")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return SourceError(f"a file of {source} is not on {hub}: {_first_line(exc)}")
    if isinstance(exc, errors.DisabledRepoError):
        return SourceError(f"{source.repo} is disabled on {hub}")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            return SourceError(f"{hub} refused access to {source} (HTTP {status}; {token_hint})")
        if status == 404:
            return SourceError(f"{source} not found on {hub}")
        return DownloadError(f"{hub} answered HTTP {status} for {source}: {_first_line(exc)}")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        # snapshot_download's "check your connection" wraps the real reason, if it kept it
        cause = exc.__cause__
        if cause is not None and (inner := translate(cause, errors, source, hub)) is not None:
            return inner
        return DownloadError(f"cannot download {source} from {hub}: check the network and HF_ENDPOINT")
    if _is_network(exc):
        return DownloadError(f"cannot reach {hub} to pull {source}: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return DownloadError(f"a download from {source} was cut short ({_first_line(exc)}); try again")
    return None

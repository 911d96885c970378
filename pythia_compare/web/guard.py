"""The page's two ASGI guards, in front of gradio's own app (ui._guarded_app puts them there).

Owns: NoCrossOrigin (no CORS grant to another site, no URL fetching through /file=), UploadLimits (who may upload
to gradio's upload route, how much per request, per client and overall) and max_body_bytes (the request body
limit). Plain ASGI over the raw scope and messages: never imports gradio, never touches the run log.
"""

from __future__ import annotations

import re
import threading
import time

from ..config import Settings


class NoCrossOrigin:
    """Outermost ASGI layer: no CORS grant to any other site, and no fetching of URLs through /file=.

    Gradio grants CORS (with credentials) to any origin once the Host is not localhost, as on a Space. The
    page itself is same-origin and needs no grant, so every Access-Control-Allow-* header is dropped.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if re.search(r"/file=\s*[a-z][a-z0-9+.-]*:", scope.get("path", ""), re.IGNORECASE):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            return await send({"type": "http.response.body", "body": b"Not allowed."})

        async def strip(message):
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                      if not k.lower().startswith(b"access-control-allow-")]
            await send(message)

        return await self.app(scope, receive, strip)


UPLOAD_FILES_PER_REQUEST = 4  # the page uploads one .txt at a time; gradio itself would take 1,000
UPLOAD_WINDOW_S = 6 * 3600  # gradio keeps an upload this long (build_demo's delete_cache): quotas count this window


class UploadLimits:
    """An ASGI layer in front of gradio's upload route (POST …/gradio_api/upload), which takes any file from anyone:
    - a request from another site's page (an Origin that is not this app's own) is refused (403): only this
      app's own page and API clients (which send no Origin) upload;
    - a request may carry at most UPLOAD_FILES_PER_REQUEST files and max_upload_bytes plus 64 KiB (413);
    - the bytes uploaded in the last UPLOAD_WINDOW_S per client (its address; on a Space, the one the proxy
      adds last to X-Forwarded-For) and overall are capped by Settings.upload_quota_client_bytes and
      upload_quota_total_bytes (429, saying when to try again), so uploads cannot fill the disk.
    Every other request passes untouched."""

    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings
        self.body_cap = settings.max_upload_bytes + 64 * 1024
        self.log: list[tuple[float, str, int]] = []  # (time, client, bytes) within the window, oldest first
        self.lock = threading.Lock()

    @staticmethod
    async def _refuse(send, status: int, text: str) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": text.encode("utf-8")})

    def _client(self, scope, headers: dict) -> str:
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        if self.settings.public and forwarded.strip():
            return forwarded.split(",")[-1].strip()
        return (scope.get("client") or ("?",))[0]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                not re.search(r"/gradio_api/upload/?$", scope.get("path", "")):
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        origin = headers.get(b"origin")
        if origin is not None:
            hosts = {headers.get(k, b"").decode("latin-1").lower() for k in (b"host", b"x-forwarded-host")}
            if origin.decode("latin-1").lower().split("://", 1)[-1].rstrip("/") not in hosts - {""}:
                return await self._refuse(send, 403, "Uploads are taken only from this app's own page.")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.body_cap:
                return await self._refuse(send, 413, f"An upload may hold at most {self.settings.max_upload_bytes} "
                                                     f"bytes of text.")
        boundary = re.search(rb"boundary=\"?([^\";]+)", headers.get(b"content-type", b""))
        files = body.count(b"--" + boundary.group(1)) - 1 if boundary else 0
        if files > UPLOAD_FILES_PER_REQUEST:
            return await self._refuse(send, 413, f"An upload may carry at most {UPLOAD_FILES_PER_REQUEST} files; "
                                                 f"this one carries {files}.")
        client, now = self._client(scope, headers), time.monotonic()
        with self.lock:
            while self.log and self.log[0][0] < now - UPLOAD_WINDOW_S:
                self.log.pop(0)
            mine = sum(n for _, c, n in self.log if c == client)
            total = sum(n for _, _, n in self.log)
            if mine + len(body) > self.settings.upload_quota_client_bytes or \
                    total + len(body) > self.settings.upload_quota_total_bytes:
                whose = "from your address" if mine + len(body) > self.settings.upload_quota_client_bytes else "in all"
                oldest = next((t for t, c, _ in self.log if whose == "in all" or c == client), now)
                wait = max(1, int(oldest + UPLOAD_WINDOW_S - now) // 60 + 1)
                return await self._refuse(send, 429, f"Too many uploads {whose} in the last "
                                                     f"{UPLOAD_WINDOW_S // 3600} hours; try again in {wait} "
                                                     f"minutes, or paste the text into the text box instead.")
            self.log.append((now, client, len(body)))
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def max_body_bytes(settings: Settings) -> int:
    """The largest request body taken: an upload, or a call whose prompt and text are at their caps (JSON may
    spell a character as 6 bytes), plus 1 MiB for everything else. Larger bodies get 413 before any parsing."""
    return settings.max_upload_bytes + 6 * (settings.max_text_chars + settings.max_prompt_chars) + 2**20

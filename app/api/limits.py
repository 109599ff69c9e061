"""Request bodies as the routes read them: over the configured size refused before any route reads them, and a
gzip or deflate body decoded (within the same size)."""

import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response

# Content-Encoding -> zlib's wbits: gzip's header and trailer, or zlib's (HTTP's "deflate").
_CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, whether it declares its length or streams it chunked, compressed or once
    decompressed. A body sent with `Content-Encoding: gzip` (as bulk loaders often send it; Elasticsearch and
    Meilisearch take it) or `deflate` reaches the routes decoded: it was read as raw bytes and answered "Invalid
    JSON" (QA). Another coding is a 415 that names it, a body its coding cannot decode a 422."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        # Buffer the (bounded) body so that a chunked upload is held to the same limit.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        coding = _content_coding(scope)
        if coding:
            refusal = None
            if coding not in _CODINGS:
                refusal = error_response(415, "unsupported_media_type", f"Content-Encoding {coding!r} is not accepted: "
                                         "send the body as it is, or gzip or deflate it")
            else:
                try:
                    body = _decoded(body, _CODINGS[coding], self.max_bytes)
                except _TooLarge:
                    refusal = error_response(413, "payload_too_large", "the request body, decompressed, is over the "
                                             f"limit of {self.max_bytes} bytes")
                except zlib.error as exc:
                    refusal = error_response(422, "invalid_input", f"the request body is not valid {coding}: {exc}",
                                             [{"loc": ["body"], "msg": str(exc), "type": "content_encoding"}])
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            scope = _decoded_scope(scope, len(body))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large",
                                  f"the request body is over the limit of {self.max_bytes} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def _content_coding(scope: Scope) -> str:
    """The body's content coding, lower case ("" for none or identity; several are taken as one unknown)."""
    codings = [part.strip().lower() for header, value in scope["headers"] if header == b"content-encoding"
               for part in value.decode("latin-1").split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    return ", ".join(codings)


def _decoded(body: bytes, wbits: int, limit: int) -> bytes:
    """`body` decompressed (each member of a multi-member gzip), refused past `limit` bytes as they come out, so a
    small body that inflates to gigabytes stops at the limit."""
    out, size, data = [], 0, body
    while True:
        inflater = zlib.decompressobj(wbits)
        chunk = inflater.decompress(data, limit + 1 - size)
        size += len(chunk)
        if size > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise zlib.error("the compressed data ends early")
        out.append(chunk)
        data = inflater.unused_data
        if not data:
            return b"".join(out)


def _decoded_scope(scope: Scope, length: int) -> Scope:
    """The request as the routes see it: no Content-Encoding, the decoded body's Content-Length."""
    kept = [(name, value) for name, value in scope["headers"] if name not in (b"content-encoding", b"content-length")]
    return {**scope, "headers": [*kept, (b"content-length", str(length).encode())]}

"""Browser preview for a Pi without a screen: ``edge-classify … --serve [HOST:]PORT``.

Standard library only (``http.server``): a page at ``/`` with the annotated MJPEG
stream (``/stream.mjpg``, label, score and FPS drawn by ``overlay.draw``), the latest
prediction at ``/latest.json`` and a list of recent predictions the page polls for.
There is no authentication: bound to anything but 127.0.0.1, anyone who can reach the
port sees the camera.

Serving must not slow classification: the loop only hands its newest frame to the
``PreviewHub`` (a reference, no copy); one encoder thread draws and JPEG-encodes it,
and only while a viewer is connected, at most ``max_fps`` times a second. Viewers get
the newest JPEG whenever they are ready for one (latest-frame semantics: a slow viewer
skips frames, nothing queues), and at most ``max_viewers`` streams are open at once,
so memory stays bounded however many viewers come and go.
"""

from __future__ import annotations

import html
import json
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Sequence

import numpy as np
from edgetl.runtime import overlay
from edgetl.runtime.classifier import Category

BOUNDARY = "edgetlframe"
STREAM_PATH, JSON_PATH = "/stream.mjpg", "/latest.json"


class ServeError(ValueError):
    """``--serve`` names an address that cannot be parsed or listened on."""


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); the host defaults to 127.0.0.1.

    Raises:
        ServeError: no valid port (0-65535) in ``text``.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ServeError(
            f"{text!r} is not PORT or HOST:PORT; give e.g. 8080 (this machine only) or 0.0.0.0:8080 (the LAN)"
        )
    return host, int(port)


class PreviewHub:
    """The newest frame and prediction, handed from the classify loop to the preview's viewers.

    Args:
        max_fps: JPEG encodes per second at most (all viewers share each encode).
        max_viewers: MJPEG streams open at once; more get HTTP 503.
        quality: JPEG quality, 0-100.
        history: predictions kept for the page's list.
    """

    def __init__(self, max_fps: float = 15.0, max_viewers: int = 8, quality: int = 80, history: int = 20):
        self.max_fps, self.max_viewers, self.quality, self.history = max_fps, max_viewers, quality, history
        self._cond = threading.Condition()
        self._pending: Optional[tuple[np.ndarray, str, list[Category], float]] = None
        self._jpeg: bytes = b""
        self._jpeg_seq = 0
        self._latest: dict[str, Any] = {}
        self._recent: list[dict[str, Any]] = []
        self.viewers = 0
        self.encoded = 0
        self.closed = False
        self._encoder = threading.Thread(target=self._encode_loop, name="preview-encoder", daemon=True)
        self._encoder.start()

    def offer(
        self, image: np.ndarray, color_order: str, categories: Sequence[Category], fps: float, record: dict[str, Any]
    ) -> None:
        """Called by the loop once per frame: keeps the prediction, and the frame only while someone watches."""
        latest = {**record, "fps": round(fps, 2)}
        with self._cond:
            self._latest = latest
            if not self._recent or _top_label(self._recent[-1]) != _top_label(
                latest
            ):  # the list shows changes of label
                self._recent = [*self._recent[-(self.history - 1) :], latest]
            if self.viewers:
                self._pending = (image, color_order, list(categories), fps)
                self._cond.notify_all()

    def latest(self) -> dict[str, Any]:
        with self._cond:
            return {**self._latest, "recent": list(reversed(self._recent)), "viewers": self.viewers}

    def next_jpeg(self, seen: int, timeout: float = 1.0) -> tuple[int, bytes]:
        """The newest JPEG after sequence number ``seen`` (or ``seen, b""`` on timeout or close)."""
        with self._cond:
            self._cond.wait_for(lambda: self._jpeg_seq != seen or self.closed, timeout)
            return (self._jpeg_seq, self._jpeg) if self._jpeg_seq != seen else (seen, b"")

    def join_viewer(self) -> bool:
        """Count a new stream in; False when ``max_viewers`` are already watching."""
        with self._cond:
            if self.viewers >= self.max_viewers or self.closed:
                return False
            self.viewers += 1
            return True

    def leave_viewer(self) -> None:
        with self._cond:
            self.viewers -= 1
            if not self.viewers:
                self._pending, self._jpeg = None, b""  # nobody watches: hold no frame

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._pending = None
            self._cond.notify_all()
        self._encoder.join(timeout=5)

    def _encode_loop(self) -> None:
        """Draw and encode the newest pending frame, at most ``max_fps`` times a second."""
        import cv2

        interval = 1.0 / self.max_fps if self.max_fps > 0 else 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self.closed)
                if self.closed:
                    return
                (image, order, categories, fps), self._pending = self._pending, None
            started = time.perf_counter()
            bgr = image[:, :, ::-1] if order == "RGB" and image.ndim == 3 else image
            ok, buffer = cv2.imencode(
                ".jpg", overlay.draw(bgr, categories, fps), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
            )
            if ok:
                with self._cond:
                    if self.viewers:
                        self._jpeg, self._jpeg_seq = buffer.tobytes(), self._jpeg_seq + 1
                        self.encoded += 1
                        self._cond.notify_all()
            time.sleep(max(0.0, interval - (time.perf_counter() - started)))


def _top_label(record: dict[str, Any]) -> Optional[str]:
    return record["top_k"][0]["label"] if record.get("top_k") else None


class PreviewServer:
    """A ``ThreadingHTTPServer`` on its own thread serving a ``PreviewHub``.

    Raises (from the constructor):
        ServeError: the address cannot be listened on (port taken, unknown host).
    """

    def __init__(self, host: str, port: int, hub: PreviewHub, title: str = "edge-classify"):
        handler = type("Handler", (_Handler,), {"hub": hub, "title": title})
        server_class = _IPv6Server if ":" in host else _Server
        try:
            self.httpd = server_class((host, port), handler)
        except (OSError, OverflowError) as exc:
            raise ServeError(
                f"--serve {host}:{port}: cannot listen there ({getattr(exc, 'strerror', None) or exc}); "
                "pick another port or address"
            ) from None
        self.hub = hub
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="preview-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop accepting, wake the streams so they end, release the port."""
        self.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck viewer never keeps the process alive
    allow_reuse_address = True  # a restart right after a stop can bind again (TIME_WAIT)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """``/``, ``/latest.json`` and ``/stream.mjpg``; everything else 404."""

    hub: PreviewHub
    title: str
    timeout = 10  # a viewer that stops reading for 10 s is dropped (its socket write times out)
    server_version = "edge-classify"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stderr belongs to the classifier's log lines

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            latest = self.hub.latest().get("top_k") or [{"label": "waiting for the first frame", "score": 0.0}]
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page(self.title, latest[0]).encode())
        elif path == JSON_PATH:
            self._send(HTTPStatus.OK, "application/json", json.dumps(self.hub.latest()).encode())
        elif path == STREAM_PATH:
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        if not self.hub.join_viewer():
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many viewers\n")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = 0
            while not self.hub.closed and not self._viewer_left():
                seen, jpeg = self.hub.next_jpeg(
                    seen, timeout=0.02
                )  # short waits: a viewer that left is noticed within 20 ms
                if jpeg:
                    self.wfile.write(
                        b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                        % (BOUNDARY.encode(), len(jpeg), jpeg)
                    )
        except OSError:  # the viewer went away (reset, broken pipe, write timeout)
            pass
        finally:
            self.hub.leave_viewer()
            self.close_connection = True

    def _viewer_left(self) -> bool:
        """True once the viewer closed its end: a viewer sends nothing after its request, so readable means EOF or reset."""
        if not select.select([self.connection], [], [], 0)[0]:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


def page(title: str, first: dict[str, Any]) -> str:
    """The preview page: the stream, the current label (also in the HTML, before any script runs) and a list."""
    label = html.escape(f"{first['label']} {first['score']:.2f}")
    return _PAGE.replace("{title}", html.escape(title)).replace("{label}", label)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{font-family:sans-serif;margin:1em;background:#111;color:#eee}img{max-width:100%;background:#000}
#label{font-size:1.6em;margin:.4em 0}li{font-family:monospace}</style></head>
<body><h1>{title}</h1>
<img id="stream" src="/stream.mjpg" alt="camera preview">
<div id="label">{label}</div><div id="fps"></div>
<h2>Recent predictions</h2><ol id="recent"></ol>
<script>
async function poll() {
  try {
    const data = await (await fetch("/latest.json", {cache: "no-store"})).json();
    const top = (data.top_k || [])[0];
    if (top) document.getElementById("label").textContent = top.label + " " + top.score.toFixed(2);
    document.getElementById("fps").textContent = (data.fps || 0).toFixed(1) + " FPS, frame " + data.frame;
    document.getElementById("recent").innerHTML = (data.recent || []).map(r => {
      const t = (r.top_k || [])[0] || {label: "-", score: 0};
      return "<li>" + new Date(r.time * 1000).toLocaleTimeString() + " " + t.label.replace(/[<>&]/g, "") + " " + t.score.toFixed(2) + "</li>";
    }).join("");
  } catch (e) {}
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""

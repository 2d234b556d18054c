"""A one-page local web demo on the standard library's ``http.server``.

``GET /`` shows an upload form; ``POST /predict`` (multipart, field ``image``) runs the predictor and answers a
page with the input and every picture of the predictor's task side by side (inline PNGs, nothing stored on disk).
A model with several tasks is served one task at a time: the one its :class:`Predictor` runs.
Bound to 127.0.0.1 unless told otherwise; request bodies larger than ``max_upload_bytes`` are refused (413)
before they are read; images over ``max_pixels`` are refused (413) from their header, before decoding; images
over ``LARGE_DECODE_PIXELS`` decode one at a time (a bounded memory budget); predictions run one at a time (the
model is shared by the request threads). Each connection has a socket timeout (``timeout`` seconds), so a stalled
upload cannot hold a thread for ever; timeouts and client disconnects are logged as one line on stderr.
"""

from __future__ import annotations

import base64
import html
import io
import signal
import sys
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from polymax.data.images import MAX_PIXELS, ImageTooLarge, open_checked, upright
from polymax.errors import UserError
from polymax.inference.images_io import to_rgb
from polymax.inference.outputs import pictures
from polymax.inference.predictor import Predictor

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0                 # seconds a connection may stay silent (headers or body) before it is closed
LARGE_DECODE_PIXELS = 4_000_000        # uploads above this decode one at a time (~12 MB each as 8-bit RGB)
_LARGE_DECODES = threading.BoundedSemaphore(1)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .meta { color: #666; }
form { margin: 1em 0 2em; padding: 1em; border: 1px solid #ccc; border-radius: 6px; display: inline-block; }
.results { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: .3em; }
figure { flex: 1 1 0; min-width: 220px; }
figure img { width: 100%; height: auto; max-height: 70vh; object-fit: contain; object-position: left top;
             border: 1px solid #ddd; image-rendering: pixelated; }
.error { color: #a00; font-weight: 600; }
"""


def _page(predictor: Predictor, body: str) -> bytes:
    config = predictor.config
    others = [name for name in config.task_names if name != predictor.task]
    also = f" (the model also has {html.escape(', '.join(others))})" if others else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polymax: {html.escape(config.preset)}</title>
<style>{_STYLE}</style></head>
<body><h1>polymax demo</h1>
<p class="meta">model <b>{html.escape(config.preset)}</b>, task <b id="task">{html.escape(predictor.task)}</b>{also},
{config.dataset.num_classes} classes ({html.escape(config.dataset.name)})</p>
<form id="upload" action="/predict" method="post" enctype="multipart/form-data">
<input id="image" type="file" name="image" accept="image/*" required>
<button id="submit" type="submit">Predict</button></form>
{body}</body></html>""".encode()


def _figure(title: str, image: Image.Image, ident: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure id="{ident}"><figcaption>{html.escape(title)}</figcaption>'
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>')


def result_html(predictor: Predictor, image: Image.Image, filename: str) -> str:
    """The results block for one uploaded image: input, then one figure per picture of the prediction."""
    result = predictor.predict(to_rgb(image))
    figures = [_figure(f"input: {filename} ({image.width}×{image.height})", image.convert("RGB"), "input")]
    figures += [_figure(picture.title, picture.image, f"pred-{picture.key}")
                for picture in pictures(result, predictor.config)]
    return f'<div class="results">{"".join(figures)}</div>'


def _uploaded_image(content_type: str, body: bytes, *, max_pixels: int = MAX_PIXELS,
                    large_pixels: int = LARGE_DECODE_PIXELS) -> tuple[str, Image.Image]:
    """(file name, decoded upright image) from a multipart body; UserError for anything unusable."""
    if not content_type.startswith("multipart/form-data"):
        raise UserError("send the image as multipart/form-data (the page's form does)")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "image":
            data = part.get_payload(decode=True) or b""
            name = part.get_filename() or "upload"
            if not data:
                raise UserError("no image was chosen")
            if _declared_pixels(data) > large_pixels:
                with _LARGE_DECODES:
                    return name, upright(open_checked(io.BytesIO(data), name, max_pixels))
            return name, upright(open_checked(io.BytesIO(data), name, max_pixels))
    raise UserError("the form has no 'image' file field")


def _declared_pixels(data: bytes) -> int:
    """Width × height from the image's header (nothing decoded); 0 when it cannot be read (reported later)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:   # Pillow raises many types for bad files; open_checked names them
        return 0


def _log(message: str) -> None:
    print(f"polymax serve: {message}", file=sys.stderr, flush=True)


def make_server(predictor: Predictor, *, host: str = "127.0.0.1", port: int = 8000,
                max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = MAX_PIXELS,
                timeout: float = DEFAULT_TIMEOUT) -> ThreadingHTTPServer:
    """A ready server (not yet serving); port 0 picks a free port (see ``server.server_address``)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "polymax-serve"

        def log_request(self, code="-", size="-") -> None:   # quiet: one line per request is noise here
            pass

        def log_message(self, format: str, *args) -> None:   # errors only (e.g. "Request timed out"), one line
            _log(f"{self.client_address[0]}: " + (format % args).splitlines()[0])

        def _send(self, status: HTTPStatus, payload: bytes, content_type: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self.close_connection = True
            self._send(status, _page(predictor, f'<p class="error" id="error">{html.escape(message)}</p>'))

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _page(predictor, ""))
            elif self.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no page {self.path}")

        def do_POST(self) -> None:
            if self.path != "/predict":
                return self._error(HTTPStatus.NOT_FOUND, f"no page {self.path}")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._error(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
            if length < 0 or length > max_upload_bytes:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"upload is {length} bytes; the limit is {max_upload_bytes} bytes")
            body = self.rfile.read(length)
            try:
                name, image = _uploaded_image(self.headers.get("Content-Type", ""), body, max_pixels=max_pixels)
                with lock:
                    block = result_html(predictor, image, name)
            except ImageTooLarge as error:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error))
            except UserError as error:
                return self._error(HTTPStatus.BAD_REQUEST, str(error))
            self._send(HTTPStatus.OK, _page(predictor, block))

    Handler.timeout = timeout     # StreamRequestHandler puts it on each connection's socket

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            error = sys.exc_info()[1]
            if isinstance(error, (ConnectionError, TimeoutError)):   # the client went away or went silent
                what = "timed out" if isinstance(error, TimeoutError) else "disconnected"
                _log(f"{client_address[0]}: client {what} ({type(error).__name__})")
            else:                                                    # a bug: keep the traceback
                super().handle_error(request, client_address)

    return Server((host, port), Handler)


def serve(predictor: Predictor, *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = MAX_PIXELS,
          timeout: float = DEFAULT_TIMEOUT) -> None:
    """Serve until Ctrl-C, then close the socket cleanly."""
    try:
        server = make_server(predictor, host=host, port=port, max_upload_bytes=max_upload_bytes,
                             max_pixels=max_pixels, timeout=timeout)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}; try another --port") from None
    address, bound_port = server.server_address[:2]
    print(f"serving {predictor.config.preset} ({predictor.task}) on http://{address}:{bound_port}/ (Ctrl-C to stop)",
          flush=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)   # `kill` stops it as cleanly as Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        server.server_close()
        if previous is not None:                               # the caller's handler, back in place
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt

"""A one-page local web demo on the standard library's ``http.server``.

``GET /`` shows an upload form; ``POST /predict`` (multipart, field ``image``) runs the predictor and answers a
page with the input and every picture of the predictor's task side by side (inline PNGs, nothing stored on disk).
A request may name another task of the model, or ``all``, as a ``task`` query parameter or form field (the page
offers a selector when the model has several tasks); without one, the predictor's own task is answered.
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
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from polymax.data.images import MAX_PIXELS, ImageTooLarge, open_checked, upright
from polymax.errors import UserError
from polymax.inference.images_io import to_rgb
from polymax.inference.outputs import pictures
from polymax.inference.predictor import ALL_TASKS, Predictor
from polymax.inference.runner import TorchRunner
from polymax.structures import MultiTaskResult, Result

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
h2 { font-size: 1.1em; margin: 1.2em 0 .5em; }
"""


def _page(predictor: Predictor, body: str, task: str | None = None) -> bytes:
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
{_task_selector(predictor, task)}<button id="submit" type="submit">Predict</button></form>
{body}</body></html>""".encode()


def _choices(predictor: Predictor) -> tuple[str, ...]:
    """The tasks a request may name: every task of a PyTorch model, those of an exported graph's task input, or
    only its own task for a one-task graph."""
    if isinstance(predictor.runner, TorchRunner):
        return predictor.config.task_names
    return getattr(predictor.runner, "tasks", (predictor.task,))


def _task_selector(predictor: Predictor, task: str | None) -> str:
    """A <select> of the model's tasks and "all" (empty for one task); ``task`` (None: the default) is selected."""
    choices = _choices(predictor)
    if len(choices) < 2:
        return ""
    chosen = task or predictor.task
    every = (ALL_TASKS,) if isinstance(predictor.runner, TorchRunner) else ()    # a graph runs one task a call
    options = "".join(f'<option value="{html.escape(name)}"{" selected" if name == chosen else ""}>'
                      f"{html.escape(name)}</option>" for name in (*choices, *every))
    return f'<label>task <select id="task-select" name="task">{options}</select></label>\n'


def _requested_task(predictor: Predictor, task: str | None) -> str | None:
    """``task`` checked against what the predictor can answer (None or "" → None: its default); UserError
    otherwise, in one line, before any model work."""
    if not task:
        return None
    choices = _choices(predictor)
    if task in choices or (task == ALL_TASKS and len(choices) > 1 and isinstance(predictor.runner, TorchRunner)):
        return task
    if task in predictor.config.task_names or task == ALL_TASKS:   # an exported graph: its task(s), one at a time
        raise UserError(f"this server runs an exported graph of the {' / '.join(choices)} task"
                        f"{'s' if len(choices) > 1 else ''}, one at a time, not {task!r}; serve the model folder "
                        "(--model DIR) to ask for other tasks")
    raise UserError(f"unknown task {task!r}; this model's tasks are {', '.join(choices)} or {ALL_TASKS}")


def _figure(title: str, image: Image.Image, ident: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure id="{ident}"><figcaption>{html.escape(title)}</figcaption>'
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>')


def result_html(predictor: Predictor, image: Image.Image, filename: str, task: str | None = None) -> str:
    """The results block for one uploaded image: input, then one figure per picture of the prediction; ``task``
    as :meth:`Predictor.predict` takes it. Several tasks get one titled section each, in the model's order."""
    result = predictor.predict(to_rgb(image), task=task)
    shown = _figure(f"input: {filename} ({image.width}×{image.height})", image.convert("RGB"), "input")
    if not isinstance(result, MultiTaskResult):
        return f'<div class="results">{shown}{_figures(result, predictor)}</div>'
    sections = [f'<section id="task-{html.escape(name)}"><h2>{html.escape(name)}</h2>'
                f'<div class="results">{_figures(result[name], predictor)}</div></section>' for name in result]
    return f'<div class="results">{shown}</div>{"".join(sections)}'


def _figures(result: Result, predictor: Predictor) -> str:
    return "".join(_figure(picture.title, picture.image, f"pred-{picture.key}")
                   for picture in pictures(result, predictor.config))


class Upload(NamedTuple):
    """What a multipart form holds: the image's file name, the decoded upright image, the ``task`` field."""

    name: str
    image: Image.Image
    task: str | None


def _uploaded_image(content_type: str, body: bytes, *, max_pixels: int = MAX_PIXELS,
                    large_pixels: int = LARGE_DECODE_PIXELS) -> Upload:
    """The image (and ``task`` field, in any order) of a multipart body; UserError for anything unusable."""
    if not content_type.startswith("multipart/form-data"):
        raise UserError("send the image as multipart/form-data (the page's form does)")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {part.get_param("name", header="content-disposition"): part
              for part in (message.iter_parts() if message.is_multipart() else [])}
    if "image" not in fields:
        raise UserError("the form has no 'image' file field")
    task = None
    if "task" in fields:
        task = (fields["task"].get_payload(decode=True) or b"").decode("utf-8", "replace").strip()
    data = fields["image"].get_payload(decode=True) or b""
    name = fields["image"].get_filename() or "upload"
    if not data:
        raise UserError("no image was chosen")
    if _declared_pixels(data) > large_pixels:
        with _LARGE_DECODES:
            return Upload(name, upright(open_checked(io.BytesIO(data), name, max_pixels)), task)
    return Upload(name, upright(open_checked(io.BytesIO(data), name, max_pixels)), task)


def _task_of(query: str, form: str | None) -> str | None:
    """The task a request names, from its query string or its form; both must agree when both name one."""
    asked = {value for value in parse_qs(query).get("task", []) + [form or ""] if value}
    if len(asked) > 1:
        raise UserError(f"the request names several tasks ({', '.join(sorted(asked))}); name one, or {ALL_TASKS}")
    return next(iter(asked), None)


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
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                try:      # ?task= preselects the page's selector (a bookmarkable link to one task)
                    task = _requested_task(predictor, _task_of(url.query, None))
                except UserError as error:
                    return self._error(HTTPStatus.BAD_REQUEST, str(error))
                self._send(HTTPStatus.OK, _page(predictor, "", task))
            elif self.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no page {self.path}")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/predict":
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
                upload = _uploaded_image(self.headers.get("Content-Type", ""), body, max_pixels=max_pixels)
                task = _requested_task(predictor, _task_of(url.query, upload.task))
                with lock:
                    block = result_html(predictor, upload.image, upload.name, task)
            except ImageTooLarge as error:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error))
            except UserError as error:
                return self._error(HTTPStatus.BAD_REQUEST, str(error))
            self._send(HTTPStatus.OK, _page(predictor, block, task))

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

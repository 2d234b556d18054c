"""`polymax serve`: the upload page over real HTTP on 127.0.0.1, and end to end in a headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from polymax_task_helpers import OneTaskGraph

import polymax
from polymax.build import build_model
from polymax.config.model import TaskConfig
from polymax.inference.predictor import Predictor
from polymax.io.pretrained import save_pretrained
from polymax.serve.app import make_server

KEEP_ALL = dict(postprocess__pixel_confidence=0.0, postprocess__thing_confidence=0.0,
                postprocess__stuff_confidence=0.0, postprocess__overlap=0.0, postprocess__thing_area_limit=0,
                postprocess__stuff_area_limit=0)
UPLOAD_LIMIT = 200_000


def _serving(predictor: Predictor, **options):
    """A started server on a free port; stop it with ``_stop``."""
    httpd = make_server(predictor, port=0, **options)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def _stop(httpd, thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the server thread must stop on shutdown"


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    httpd, thread = _serving(Predictor(polymax.build_model("kmax_tiny_test", **KEEP_ALL)),
                             max_upload_bytes=UPLOAD_LIMIT)
    yield httpd
    _stop(httpd, thread)


@pytest.fixture(scope="module")
def two_task_dir(tmp_path_factory) -> Path:
    """A saved model with a semantic and a depth head on one trunk (tiny, untrained)."""
    config = build_model("polymax_tiny_synth_semantic").config
    depth = TaskConfig(name="depth", num_queries=16, aux_semantic="none", min_depth=0.1, max_depth=10.0)
    config = dataclasses.replace(config, tasks=(config.task("semantic"), depth))
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("two_tasks") / "model"
    save_pretrained(build_model(config), directory)
    return directory


def _png(height=48, width=72) -> bytes:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[: height // 2] = (200, 180, 150)
    image[:, width // 3:] += np.uint8(40)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(server, method, path, body=b"", headers=None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read().decode()
    connection.close()
    return response.status, payload


def _multipart(data: bytes, filename="photo.png", field="image", **fields: str):
    """A multipart body: the file, then any text ``fields`` (after it, as a field order the server must not mind)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data
    for name, value in fields.items():
        body += f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}".encode()
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_bound_to_loopback(server):
    assert server.server_address[0] == "127.0.0.1"


def test_page_has_an_upload_form(server):
    status, page = _request(server, "GET", "/")
    assert status == 200
    assert 'enctype="multipart/form-data"' in page and 'type="file"' in page
    assert "kmax_tiny_test" in page
    assert re.search(r'task <b id="task">panoptic</b>,', page), "the page names the task it runs"
    assert _request(server, "GET", "/elsewhere")[0] == 404


def test_upload_returns_the_pictures_side_by_side(server):
    status, page = _request(server, "POST", "/predict", *_multipart(_png()))
    assert status == 200
    figures = dict(re.findall(r'<figure id="([\w-]+)">.*?src="data:image/png;base64,([^"]+)"', page))
    assert set(figures) == {"input", "pred-panoptic_color", "pred-semantic_color"}
    panoptic = Image.open(io.BytesIO(base64.b64decode(figures["pred-panoptic_color"])))
    assert panoptic.width >= 72 and panoptic.height >= 48, "the picture keeps the upload's size (+ legend)"
    assert "photo.png" in page


def test_bad_uploads_get_a_clear_message(server):
    status, page = _request(server, "POST", "/predict", *_multipart(b"GIF89a garbage", filename="bad.gif"))
    assert status == 400 and "bad.gif: not a readable image" in page
    status, page = _request(server, "POST", "/predict", *_multipart(_png(), field="other"))
    assert status == 400 and "no &#x27;image&#x27; file field" in page


def test_oversized_upload_is_refused_before_reading(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(10 * UPLOAD_LIMIT))
    connection.endheaders()                      # no body sent: the server must answer from the headers alone
    response = connection.getresponse()
    assert response.status == 413
    assert str(UPLOAD_LIMIT) in response.read().decode()
    connection.close()


def _serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polymax", "serve", "--port", "0", *args], capture_output=True,
                          text=True, timeout=120)


def test_two_task_model_without_task_is_a_one_line_error(two_task_dir):
    result = _serve_cli("--model", str(two_task_dir))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "semantic" in lines[0] and "depth" in lines[0] and "--task" in lines[0]
    assert "serving" not in result.stdout


def test_unknown_task_is_a_one_line_error(two_task_dir):
    result = _serve_cli("--model", str(two_task_dir), "--task", "normals")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "'normals'" in result.stderr
    assert "semantic" in result.stderr and "depth" in result.stderr     # the choices


def test_a_chosen_task_of_a_two_task_model_is_served(two_task_dir):
    predictor = Predictor.from_pretrained(two_task_dir, task="depth", resize="none")
    httpd, thread = _serving(predictor)
    try:
        page = _request(httpd, "GET", "/")[1]
        assert re.search(r'task <b id="task">depth</b> \(the model also has semantic\)', page)
        status, page = _request(httpd, "POST", "/predict", *_multipart(_png()))
        assert status == 200
        figures = set(re.findall(r'<figure id="([\w-]+)">', page))
        assert figures == {"input", "pred-depth_color"}, figures           # only the chosen task's pictures
    finally:
        _stop(httpd, thread)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                              else None)
    if not chromium or not driver:
        pytest.skip("chromium and chromium-driver are not installed")
    return chromium, driver


@pytest.mark.browser
def test_upload_in_a_headless_browser(server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    image_path = tmp_path / "room.png"
    image_path.write_bytes(_png(96, 144))
    # An explicit driver path: selenium must not look for or download a driver.
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        host, port = server.server_address[:2]
        browser.get(f"http://{host}:{port}/")
        assert "polymax" in browser.title
        browser.find_element(By.ID, "image").send_keys(str(image_path))
        browser.find_element(By.ID, "submit").click()
        shown = expected_conditions.presence_of_element_located((By.ID, "pred-semantic_color"))
        WebDriverWait(browser, 60).until(shown)
        sizes = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure img')).map(i => [i.complete, i.naturalWidth]);")
        assert len(sizes) == 3 and all(done and width > 0 for done, width in sizes), sizes
        tops = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure')).map(f => f.getBoundingClientRect().top);")
        assert max(tops) - min(tops) < 5, "the pictures stand side by side"
        screenshot = tmp_path / "served_page.png"
        browser.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] > 0
    finally:
        browser.quit()


def test_an_oversized_image_is_reported_as_such():
    httpd, thread = _serving(Predictor(polymax.build_model("kmax_tiny_test")), max_pixels=1000)
    try:
        status, page = _request(httpd, "POST", "/predict", *_multipart(_png(48, 72), filename="wide.png"))
    finally:
        _stop(httpd, thread)
    assert status == 413 and "wide.png: 72×48 = 3456 pixels is over the limit of 1000 pixels" in page
    assert "not a readable image" not in page


def test_a_phone_photo_is_shown_upright(server):
    exif = Image.Exif()
    exif[0x0112] = 6                                          # display rotated 90° clockwise
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(buffer, format="PNG", exif=exif)
    status, page = _request(server, "POST", "/predict", *_multipart(buffer.getvalue()))
    assert status == 200 and "(20×30)" in page, "the input is 20 wide and 30 high once upright"


def test_large_decodes_run_one_at_a_time(monkeypatch):
    from PIL import ImageFile

    from polymax.serve import app

    running, most = [0], [0]
    original = ImageFile.ImageFile.load

    def slow_load(self):
        running[0] += 1
        most[0] = max(most[0], running[0])
        threading.Event().wait(0.2)
        running[0] -= 1
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    body, headers = _multipart(_png(48, 72))
    threads = [threading.Thread(target=app._uploaded_image, args=(headers["Content-Type"], body),
                                kwargs={"max_pixels": 10_000, "large_pixels": 100}) for _ in range(3)]
    for worker in threads:
        worker.start()
    for worker in threads:
        worker.join()
    assert most[0] == 1


def test_a_stalled_upload_times_out_and_frees_its_worker(capsys):
    import socket
    import time

    httpd, thread = _serving(Predictor(polymax.build_model("kmax_tiny_test")), timeout=0.5)
    try:
        client = socket.create_connection(httpd.server_address[:2], timeout=10)
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                       b"Content-Length: 1000\r\n\r\npartial")
        started = time.monotonic()
        while client.recv(4096):      # the server gives up and closes the connection
            pass
        waited = time.monotonic() - started
        client.close()
    finally:
        _stop(httpd, thread)
    assert waited < 5
    err = capsys.readouterr().err
    assert "timed out" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_client_disconnect_is_one_line(capsys):
    httpd = make_server(Predictor(polymax.build_model("kmax_tiny_test")), port=0)
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            httpd.handle_error(None, ("127.0.0.1", 5555))
    finally:
        httpd.server_close()
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "disconnected" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def two_task_server(two_task_dir):
    """The two-task model served with semantic as its default task."""
    httpd, thread = _serving(Predictor.from_pretrained(two_task_dir, task="semantic", resize="none"))
    yield httpd
    _stop(httpd, thread)


def _figures(page: str) -> set[str]:
    return set(re.findall(r'<figure id="([\w-]+)">', page))


def test_each_request_may_name_its_task(two_task_server):
    status, page = _request(two_task_server, "POST", "/predict", *_multipart(_png()))
    assert status == 200 and _figures(page) == {"input", "pred-semantic_color"}, "no task: the default, as before"
    status, page = _request(two_task_server, "POST", "/predict?task=depth", *_multipart(_png()))
    assert status == 200 and _figures(page) == {"input", "pred-depth_color"}, "the query parameter"
    status, page = _request(two_task_server, "POST", "/predict", *_multipart(_png(), task="depth"))
    assert status == 200 and _figures(page) == {"input", "pred-depth_color"}, "the form field"
    assert '<option value="depth" selected>' in page, "the selector keeps the task just asked for"
    status, page = _request(two_task_server, "POST", "/predict", *_multipart(_png()))
    assert _figures(page) == {"input", "pred-semantic_color"}, "the default is unchanged by earlier requests"


def test_task_all_shows_every_task_grouped(two_task_server):
    status, page = _request(two_task_server, "POST", "/predict", *_multipart(_png(), task="all"))
    assert status == 200
    assert _figures(page) == {"input", "pred-semantic_color", "pred-depth_color"}
    sections = re.findall(r'<section id="task-(\w+)"><h2>\w+</h2>(.*?)</section>', page, flags=re.S)
    assert [name for name, _ in sections] == ["semantic", "depth"], "one section per task, in the model's order"
    assert all(f'id="pred-{name}_color"' in block for name, block in sections)


def test_an_unknown_task_is_a_400_naming_the_tasks(two_task_server):
    for path, fields in (("/predict?task=normals", {}), ("/predict", {"task": "normals"})):
        status, page = _request(two_task_server, "POST", path, *_multipart(_png(), **fields))
        message = re.search(r'<p class="error" id="error">(.*?)</p>', page).group(1)
        assert status == 400 and "normals" in message and "semantic, depth or all" in message, message
        assert "Traceback" not in page
    status, page = _request(two_task_server, "POST", "/predict?task=depth", *_multipart(_png(), task="semantic"))
    assert status == 400 and "several tasks" in page
    assert _request(two_task_server, "GET", "/?task=normals")[0] == 400


def test_the_page_offers_a_task_selector_for_several_tasks(two_task_server, server):
    page = _request(two_task_server, "GET", "/")[1]
    select = re.search(r'<select id="task-select" name="task">(.*?)</select>', page, flags=re.S)
    assert select, "a multi-task model gets a selector inside the form"
    assert re.findall(r'<option value="(\w+)"', select.group(1)) == ["semantic", "depth", "all"]
    assert '<option value="semantic" selected>' in select.group(1), "the default task is preselected"
    assert '<option value="all" selected>' in _request(two_task_server, "GET", "/?task=all")[1]
    assert "<select" not in _request(server, "GET", "/")[1], "one task: no selector"


def test_an_exported_graph_refuses_other_tasks(two_task_dir):
    config = polymax.load_model(two_task_dir).config
    httpd, thread = _serving(Predictor(OneTaskGraph(config, "depth")))
    try:
        assert "<select" not in _request(httpd, "GET", "/")[1], "one runnable task: no selector"
        for task in ("semantic", "all"):
            status, page = _request(httpd, "POST", "/predict", *_multipart(_png(), task=task))
            assert status == 400 and "exported graph" in page and "--model" in page, page
    finally:
        _stop(httpd, thread)

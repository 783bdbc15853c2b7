"""--restore-from URL: weights downloaded once from a local HTTP server on 127.0.0.1, resumed after a
broken transfer, checked, and every way a download goes wrong named in one line."""
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import utils.files.download as download
from tests.helpers import ROOT
from utils.convert_weights import main as convert_main
from utils.demo.torch_writer import save_legacy
from utils.files.download import DownloadError, weights_file
from utils.files.weights import WeightsError


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` {path: bytes}; ``modes`` {path: how}: "cut" sends half the body once, then
    honours Range; "html" a login page; "slow" nothing for 2 s. Logs (path, Range header)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.modes, self.requests = {}, {}, []

    def url(self, path):
        return "http://127.0.0.1:{}{}".format(self.server_address[1], path)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first (the timeout test)
            pass

    def answer(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        mode = server.modes.get(self.path)
        if mode == "slow":
            threading.Event().wait(2.0)
        if mode == "html":
            body = b"<!DOCTYPE html><html><body>Please log in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path not in server.files:
            self.send_error(404, "Not Found")
            return
        body = server.files[self.path]
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start:
            start = getattr(self, "answer_from", start)  # a server that answers a range from elsewhere
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", "bytes {}-{}/{}".format(start, len(body) - 1, len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode == "cut":
            server.modes[self.path] = None  # once
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(download, "RETRY_PAUSE", 0.0)
    return tmp_path / "cache"


def weights_bytes(tmp_path, seed=0):
    """A discriminator's weights as a PyTorch legacy file, and the name a hub would give it."""
    from model import FCDiscriminator
    from tests.helpers import seeded_torch_state
    path = str(tmp_path / "d.pth")
    save_legacy(seeded_torch_state(FCDiscriminator(19), seed), path)
    with open(path, "rb") as f:
        data = f.read()
    return data, "/files/GTA5_D-{}.pth".format(hashlib.sha256(data).hexdigest()[:8])


def test_a_url_is_downloaded_once_then_read_from_the_cache(server, tmp_path, cache):
    data, path = weights_bytes(tmp_path)
    server.files[path] = data
    first = weights_file(server.url(path), log=lambda line: None)
    assert first == str(cache / os.path.basename(path))
    with open(first, "rb") as f:
        assert f.read() == data
    assert weights_file(server.url(path), log=lambda line: None) == first
    assert [p for p, _ in server.requests] == [path]  # the second run asked nothing
    assert not [name for name in os.listdir(str(cache)) if name.endswith(".part")]


def test_the_converter_takes_a_url_as_the_original_took_one(server, tmp_path):
    data, path = weights_bytes(tmp_path)
    server.files[path] = data
    out = str(tmp_path / "D.pdparams")
    assert convert_main([server.url(path), out, "--model", "FCDiscriminator"]) == 0
    assert os.path.isfile(out)


def test_a_broken_transfer_resumes_where_it_stopped(server, tmp_path):
    data, path = weights_bytes(tmp_path)
    server.files[path], server.modes[path] = data, "cut"
    local = weights_file(server.url(path), log=lambda line: None)
    with open(local, "rb") as f:
        assert f.read() == data
    (_, first_range), (_, second_range) = server.requests
    assert first_range is None and second_range == "bytes={}-".format(len(data) // 2)


@pytest.mark.parametrize("fault, named", [
    ("wrong hash", "its name says its SHA-256 starts"),
    ("html", "sent a web page"),
    ("404", "HTTP 404"),
    ("timeout", "timed out"),
])
def test_each_bad_download_ends_in_one_line_naming_the_url_and_the_way_out(server, tmp_path, cache, fault, named):
    data, path = weights_bytes(tmp_path)
    if fault == "wrong hash":
        path = "/files/GTA5_D-0123abcd.pth"
        server.files[path] = data
    elif fault == "html":
        server.modes[path] = "html"
    elif fault == "timeout":
        server.files[path], server.modes[path] = data, "slow"
    with pytest.raises(DownloadError) as error:
        weights_file(server.url(path), timeout=0.5, log=lambda line: None)
    message = str(error.value)
    assert "\n" not in message and named in message and server.url(path) in message
    assert "put it at {}".format(cache / os.path.basename(path)) in message  # how to place it by hand
    assert not os.path.exists(str(cache / os.path.basename(path)))


def test_a_resume_the_server_answers_from_another_offset_starts_the_file_over(server, tmp_path, monkeypatch):
    data, path = weights_bytes(tmp_path)
    server.files[path] = data
    cache = os.environ[download.CACHE_ENV]
    os.makedirs(cache)
    with open(os.path.join(cache, os.path.basename(path) + ".part"), "wb") as f:
        f.write(b"\0" * 100)  # what an older, different file left
    monkeypatch.setattr(Handler, "answer_from", 50, raising=False)
    local = weights_file(server.url(path), log=lambda line: None)
    with open(local, "rb") as f:
        assert f.read() == data


def test_a_dead_link_falls_back_to_the_mirror(server, tmp_path):
    data, path = weights_bytes(tmp_path)
    server.files["/mirror" + path] = data
    local = weights_file(server.url(path) + "," + server.url("/mirror" + path), log=lambda line: None)
    with open(local, "rb") as f:
        assert f.read() == data
    assert [p for p, _ in server.requests] == [path, "/mirror" + path]


def test_restore_sha256_checks_a_name_without_a_hash_suffix(server, tmp_path):
    data, _ = weights_bytes(tmp_path)
    server.files["/plain.pth"] = data

    with pytest.raises(DownloadError, match="its SHA256 is {}".format(hashlib.sha256(data).hexdigest())):
        weights_file(server.url("/plain.pth"), sha256="ab" * 32, log=lambda line: None)
    sha256, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    assert os.path.isfile(weights_file(server.url("/plain.pth"), sha256=sha256, md5=md5, log=lambda line: None))
    with pytest.raises(WeightsError, match="--restore-md5"):  # a local file is checked the same way
        weights_file(str(tmp_path / "d.pth"), md5="00" * 8)


def test_two_processes_wanting_one_url_download_it_once(server, tmp_path, cache):
    data, path = weights_bytes(tmp_path)
    server.files[path], server.modes[path] = data, "slow"  # both are waiting when the first byte comes
    code = "import sys; from utils.files.download import weights_file; print(weights_file(sys.argv[1]))"
    processes = [subprocess.Popen([sys.executable, "-c", code, server.url(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                  env=dict(os.environ, **{download.CACHE_ENV: str(cache)})) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert sum("downloaded" in out for out in outputs) == 1 and sum("found in the cache" in out for out in outputs) == 1
    assert [p for p, _ in server.requests] == [path]
    assert np.array_equal(np.fromfile(str(cache / os.path.basename(path)), np.uint8), np.frombuffer(data, np.uint8))


SYNTHETIC_DATA = dict(num_source=2, num_target_train=2, num_target_val=1)


def test_training_starts_from_weights_at_a_url(server, tmp_path, data, capsys):
    import train_gta2cityscapes_multi as train
    from tests.helpers import training_args
    weights, path = weights_bytes(tmp_path, seed=3)
    server.files[path] = weights
    run_dir = str(tmp_path / "run")
    assert train.main(training_args(data, run_dir, 1, "--restore-from-D1", server.url(path), save_every=1)) == 0
    out = capsys.readouterr().out
    assert "downloaded {}".format(server.url(path)) in out
    reference = convert_main([server.url(path), str(tmp_path / "D1_initial.pdparams"), "--model", "FCDiscriminator"])
    assert reference == 0 and [p for p, _ in server.requests] == [path]  # the second use read the cache

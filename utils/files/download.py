"""Weights from a URL, as the original's ``--restore-from http://...``: downloaded once into a
cache, checked, and reused.

    --restore-from http://host/DeepLab_resnet_pretrained_init-f81d91e8.pth
    --restore-from URL,MIRROR_URL          (tried in order)
    --restore-from URL --restore-sha256 HEX   (for a name without a hash suffix)

The cache is Paddle's (``paddle.utils.download``: ~/.cache/paddle/hapi/weights, or
$ADAPTSEGNET_WEIGHTS_HOME), under the URL's file name, so mirrors of one file share it. Not
``paddle.utils.download`` itself: it cannot resume a broken transfer, checks MD5 only, cannot tell
an HTML error page from weights, and needs ``requests``; this is the standard library.

A transfer goes to ``<name>.part`` and is renamed when complete and checked, so the cache never
holds a partial file under the real name; a later try resumes the ``.part`` with an HTTP Range
request where the server allows it. Processes that want the same file (the ranks of a
distributed job, two notebooks) take a lock on it: one downloads, the others wait and use it.
"""
import contextlib
import fcntl
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from utils.files.weights import WeightsError, check_hash_suffix, file_digest

CACHE_ENV = "ADAPTSEGNET_WEIGHTS_HOME"
DEFAULT_CACHE = os.path.join("~", ".cache", "paddle", "hapi", "weights")
ATTEMPTS = 3  # per URL; each resumes the transfer where the last one broke off
RETRY_PAUSE = 2.0  # seconds, times the try's number
TIMEOUT = 30.0  # seconds without a byte
_CHUNK = 1 << 20


class DownloadError(WeightsError):
    """No URL gave the file; the message names each URL, what went wrong and what to do."""


def is_url(text):
    return isinstance(text, str) and text.split(",")[0].strip().lower().startswith(("http://", "https://"))


def cache_dir():
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def add_arguments(parser):
    """--restore-sha256 / --restore-md5: what a downloaded (or local) --restore-from must hash to."""
    parser.add_argument("--restore-sha256", default=None, metavar="HEX",
                        help="the SHA-256 (or its start) that the --restore-from file must have; for a URL or name "
                             "without a hash suffix (README: Weights from a URL)")
    parser.add_argument("--restore-md5", default=None, metavar="HEX",
                        help="the MD5 that the --restore-from file must have")


def restore_checks(args):
    """What --restore-from must hash to, as weights_file's keywords, from a script's arguments."""
    return dict(sha256=args.restore_sha256, md5=args.restore_md5, hash_check=not args.no_hash_check)


def weights_file(spec, sha256=None, md5=None, hash_check=True, timeout=TIMEOUT, log=print):
    """The local path of ``spec`` (a --restore-from value): itself when it is no URL, else the
    cached download of the first of its comma-separated URLs that delivers a good file.
    ``sha256`` / ``md5`` (--restore-sha256 / --restore-md5) are checked in both cases;
    ``hash_check`` False (--no-hash-check) skips the check of a downloaded name's hash suffix."""
    if not is_url(spec):
        if spec is not None and os.path.isfile(spec):
            _check_digests(spec, sha256, md5, spec)
        return spec
    urls = [url.strip() for url in spec.split(",") if url.strip()]
    names = {os.path.basename(urllib.parse.urlparse(url).path) for url in urls}
    if len(names) != 1 or "" in names:
        raise DownloadError("--restore-from {}: the URLs must end in one and the same file name (mirrors of one "
                            "file), e.g. .../GTA2Cityscapes_multi-ed35151c.pth".format(spec))
    path = os.path.join(cache_dir(), names.pop())
    promised = path if hash_check else None  # the name whose hash suffix the file must match
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _locked(path + ".lock"):
        if os.path.isfile(path):
            try:
                _check(path, sha256, md5, path, name=promised)
                log("{}: found in the cache".format(path))
                return path
            except WeightsError as exc:
                log("the cached {} is not the file ({}); downloading it again".format(path, exc))
                os.remove(path)
        failures = []
        for url in urls:
            try:
                _download(url, path + ".part", timeout)
                _check(path + ".part", sha256, md5, url, name=promised)
            except DownloadError as exc:
                failures.append(str(exc))
                continue
            except WeightsError as exc:  # a hash that does not match: the file, not the URL, is named
                failures.append("{}: {}".format(url, exc))
                continue
            os.replace(path + ".part", path)  # the .part was synced: the rename leaves a whole file
            log("downloaded {} to {}".format(url, path))
            return path
    raise DownloadError("could not get {}: {}. Check the URL and the network, or give another URL after a comma. "
                        "On a machine without internet (an AI Studio session with its network off), download the "
                        "file elsewhere and put it at {} (or give --restore-from its local path)".format(
                            os.path.basename(path), "; ".join(failures), path))


@contextlib.contextmanager
def _locked(path):
    """A POSIX record lock, as utils/files/lock.py takes (it holds on network file systems)."""
    with open(path, "a") as f:
        fcntl.lockf(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f.fileno(), fcntl.LOCK_UN)


def _download(url, part, timeout):
    """Fetch ``url`` into ``part``, resuming what is there; retried ATTEMPTS times."""
    last = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_PAUSE * attempt)
        try:
            _transfer(url, part, timeout)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and os.path.exists(part):  # what we hold is already longer than the file
                os.remove(part)
            if exc.code == 416 or exc.code >= 500:
                last = exc
                continue
            raise DownloadError("{}: HTTP {} {}".format(url, exc.code, exc.reason))
        except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException,
                _Truncated) as exc:
            last = exc
        except OSError as exc:  # writing the .part (a full disk), an SSL failure: not worth a retry
            raise DownloadError("{}: {}".format(url, exc))
    reason = getattr(last, "reason", None) or last
    raise DownloadError("{}: {} ({} tries)".format(url, "timed out" if isinstance(reason, socket.timeout) else reason,
                                                  ATTEMPTS))


class _Truncated(Exception):
    pass


def _transfer(url, part, timeout):
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "AdaptSegNet-Paddle"})
    if have:
        request.add_header("Range", "bytes={}-".format(have))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower():
            raise DownloadError("{}: the server sent a web page ({}), not the weights: the link is dead or needs a "
                                "login".format(url, content_type))
        resumed = have and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith("bytes {}-".format(have)):
            os.remove(part)  # it answered from elsewhere than where the .part ends: start over
            raise _Truncated("the server resumed at another offset ({})".format(response.headers.get("Content-Range")))
        length = response.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=os.path.basename(part)[:-len(".part")], leave=False) as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and os.path.getsize(part) < total:
        raise _Truncated("the transfer broke off at {} of {} bytes".format(os.path.getsize(part), total))


def _check(path, sha256, md5, source, name=None):
    """The file at ``path`` is the weights ``name`` (its cache name) promises: not a web page, its
    hash suffix and the given digests right. A bad download is removed, so that the next try starts
    over."""
    try:
        with open(path, "rb") as f:
            head = f.read(256).lstrip().lower()
        if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
            raise DownloadError("{}: the server sent a web page, not the weights: the link is dead or needs a "
                                "login".format(source))
        if name is not None:
            check_hash_suffix(path, name)
        _check_digests(path, sha256, md5, source)
    except WeightsError:
        if path.endswith(".part"):
            os.remove(path)
        raise


def _check_digests(path, sha256, md5, source):
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if not expected:
            continue
        expected = expected.strip().lower()
        actual = file_digest(path, algorithm)
        if not actual.startswith(expected):
            raise WeightsError("{}: its {} is {}, not {} (--restore-{}): the file is damaged, incomplete or another "
                               "one".format(source, algorithm.upper(), actual, expected, algorithm))

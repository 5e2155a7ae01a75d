"""Operator annotation file format and the local annotation tool (HTTP API with urllib; the page in headless
Chromium, marked `browser`)."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from etc_training.etc.annotate import (
    ANNOTATION_FORMAT,
    AnnotationError,
    AnnotationServer,
    annotation_errors,
    annotations_for,
    load_annotations,
)
from etc_training.etc.synthetic import make_episode, write_dataset

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


def doc(objs, frame="0", cam="primary", ep="0"):
    return {"format": ANNOTATION_FORMAT, "episodes": {ep: {"frames": {frame: {cam: objs}}}}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ann_ds") / "episodes",
                         [make_episode(1, "pick_place"), make_episode(2, "push")])


@pytest.fixture()
def server(dataset, tmp_path):
    srv = AnnotationServer(dataset, tmp_path / "ann.json", port=0).start()
    yield srv
    srv.stop()


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def post(url: str, body: bytes):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ------------------------------------------------------------------------------------------ file format
def test_format_accepts_good_documents():
    d = doc([{"name": "red cube", "point": [10.0, 20.5], "box": [5, 10, 15, 30]},
             {"name": "bowl", "box": [1, 1, 9, 9]}])
    assert annotation_errors(d, {"primary": (160, 120)}, {0: 40}) == []
    got = annotations_for(d, 0, "episode_000000")
    assert list(got) == [0] and [o["name"] for o in got[0]["primary"]] == ["red cube", "bowl"]
    assert annotations_for(d, 1, "episode_000001") is None
    by_id = {"format": ANNOTATION_FORMAT, "episodes": {"episode_000003": {"frames": {"2": {"primary": []}}}}}
    assert annotations_for(by_id, 3, "episode_000003") == {2: {"primary": []}}


@pytest.mark.parametrize("bad,needle", [
    ({"episodes": {}}, "'format'"),
    (doc([{"point": [1, 2]}]), "'name'"),
    (doc([{"name": "cube"}]), "needs a 'point'"),
    (doc([{"name": "cube", "point": [1]}]), "'point' must be"),
    (doc([{"name": "cube", "box": [10, 10, 5, 20]}]), "x1 <= x2"),
    (doc([{"name": "cube", "point": [500, 2]}]), "outside the 160x120 image"),
    (doc([{"name": "a", "point": [1, 2]}, {"name": "a", "point": [3, 4]}]), "unique"),
    (doc([{"name": "cube", "point": [1, 2]}], cam="wrist"), "unknown camera"),
    (doc([{"name": "cube", "point": [1, 2]}], frame="99"), "past the episode"),
    (doc([{"name": "cube", "point": [1, 2]}], frame="x"), "non-negative integers"),
])
def test_format_rejects_bad_documents(bad, needle, tmp_path):
    errs = annotation_errors(bad, {"primary": (160, 120)}, {0: 40})
    assert any(needle in e for e in errs), errs
    p = tmp_path / "a.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match="a.json"):
        load_annotations(p, {"primary": (160, 120)}, {0: 40})


def test_load_missing_or_broken_file(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_annotations(tmp_path / "nope.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_annotations(tmp_path / "b.json")


# ------------------------------------------------------------------------------------------ HTTP API
def test_http_api_info_frame_and_page(server):
    code, ctype, body = get(server.url + "api/info")
    info = json.loads(body)
    assert code == 200 and "json" in ctype
    assert [e["length"] for e in info["episodes"]] == [43, 33] and info["cameras"] == {"primary": [160, 120]}
    code, ctype, png = get(server.url + "api/frame?episode=1&frame=5&camera=primary")
    assert code == 200 and ctype == "image/png"
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size == (160, 120)
    code, ctype, page = get(server.url)
    assert code == 200 and b"/api/annotations" in page and "text/html" in ctype
    assert json.loads(get(server.url + "api/annotations")[2])["episodes"] == {}


def test_http_api_save_validates_and_persists(server):
    good = doc([{"name": "red cube", "point": [40.5, 60.0], "box": [30, 50, 50, 70]}], frame="3")
    code, body = post(server.url + "api/annotations", json.dumps(good).encode())
    assert code == 200 and body["ok"] and body["objects"] == 1
    saved = load_annotations(server.out, {"primary": (160, 120)}, {0: 43, 1: 33})
    assert saved["episodes"]["0"]["frames"]["3"]["primary"][0]["name"] == "red cube"
    assert json.loads(get(server.url + "api/annotations")[2])["episodes"] == saved["episodes"]
    before = server.out.read_text()
    code, body = post(server.url + "api/annotations", json.dumps(doc([{"name": "x"}])).encode())
    assert code == 400 and "needs a 'point'" in body["error"]
    code, body = post(server.url + "api/annotations", b"{broken")
    assert code == 400 and "not JSON" in body["error"]
    assert server.out.read_text() == before  # a rejected save changes nothing


def test_http_api_errors(server):
    for path, needle in (("api/frame?episode=9&frame=0", "does not exist"), ("api/frame?episode=0&frame=500",
                                                                             "frames 0..42"),
                         ("api/frame?episode=0&frame=0&camera=wrist", "unknown camera"), ("api/frame", "integer")):
        with pytest.raises(urllib.error.HTTPError) as ei:
            get(server.url + path)
        assert ei.value.code == 400 and needle in json.loads(ei.value.read())["error"]
    with pytest.raises(urllib.error.HTTPError) as ei:
        get(server.url + "etc/passwd")
    assert ei.value.code == 404


def test_server_is_loopback_only_and_resumes_existing_file(dataset, tmp_path):
    with pytest.raises(AnnotationError, match="loopback"):
        AnnotationServer(dataset, tmp_path / "a.json", host="0.0.0.0")
    p = tmp_path / "a.json"
    p.write_text(json.dumps(doc([{"name": "cube", "point": [1, 2]}])))
    srv = AnnotationServer(dataset, p, port=0)
    try:
        assert srv.httpd.server_address[0] == "127.0.0.1"
        assert srv.doc["episodes"]["0"]["frames"]["0"]["primary"][0]["name"] == "cube"
    finally:
        srv.httpd.server_close()
    p.write_text(json.dumps(doc([{"name": "cube", "point": [999, 2]}])))
    with pytest.raises(AnnotationError, match="outside"):
        AnnotationServer(dataset, p, port=0)


# ------------------------------------------------------------------------------------------ the page
@pytest.mark.browser
def test_page_in_headless_chromium(dataset, tmp_path):
    if CHROMIUM is None:
        pytest.skip("browser test: /usr/bin/chromium not installed (apt-get install chromium)")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc([{"name": "red cube", "point": [40.0, 60.0], "box": [30, 50, 50, 70]}])))
    srv = AnnotationServer(dataset, ann, port=0).start()
    try:
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=10000", "--dump-dom",
                            srv.url], capture_output=True, text=True, timeout=90)
    finally:
        srv.stop()
    dom = r.stdout
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loaded 2 episodes" in dom, dom[-3000:]  # the JS ran and reached the API
    assert dom.count('class="episode-option"') == 2
    assert 'class="obj"' in dom and "red cube point [40.0, 60.0] box [30.0, 50.0, 50.0, 70.0]" in dom
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()


def test_cli_annotate_serves_until_stopped(dataset, tmp_path):
    import os
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "etc_training.cli", "etc", "annotate", "--episodes", str(dataset),
                             "--out", str(tmp_path / "a.json"), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read() if proc.poll() is not None else line
        url = line.split("open ", 1)[1].split(" ", 1)[0]
        info = json.loads(get(url + "api/info")[2])
        assert len(info["episodes"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)

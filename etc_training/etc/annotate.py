"""Operator annotations for target-scene (teleop) ETC: the file format, its loader, and a small local web tool.

File format (JSON, pixels of the stored image, centre convention as etc_ros.core.camera):

    {
      "format": "etc_annotations/1",
      "dataset": "/path/to/episodes",                 # informational
      "episodes": {
        "3": {                                         # episode index (or its episode_id)
          "episode_id": "episode_000003",              # optional
          "frames": {
            "0": {                                     # frame index
              "primary": [                             # camera name
                {"name": "red cube", "point": [81.0, 64.5], "box": [70.0, 55.0, 92.0, 74.0]},
                {"name": "blue bowl", "box": [100, 40, 140, 70]}
              ]
            }
          }
        }
      }
    }

Each object needs a non-empty name and a point [u, v] and/or a box [x1, y1, x2, y2] (x1 <= x2, y1 <= y2); a box
without a point uses the box centre as the object's point. Names must be unique per frame and camera.
Scene-grounding ETC (point, box, objects, relation, gripper_relation) is built at the annotated frames.

The tool: `etc-vla etc annotate --episodes DIR --out FILE [--port N]` serves annotate_page.html on 127.0.0.1
only. HTTP API (JSON unless noted):
    GET  /                      the page
    GET  /api/info              {dataset, out, episodes: [{index, episode_id, length, instruction, split, cameras}],
                                 cameras: {name: [W, H]}}
    GET  /api/frame?episode=I&frame=T&camera=C      PNG of that frame
    GET  /api/annotations       the current annotation document
    POST /api/annotations       replace the document (validated, saved atomically) -> {ok, objects, path}
Bad requests answer 400 {"error": "..."}; unknown paths 404.
"""
from __future__ import annotations

import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from etc_ros.core.errors import UserError
from etc_ros.core.io import atomic_write_json
from etc_ros.data.schema import image_key

ANNOTATION_FORMAT = "etc_annotations/1"
PAGE = Path(__file__).with_name("annotate_page.html")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AnnotationError(UserError):
    """An operator annotation file (or a request of the annotation tool) is malformed."""


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def annotation_errors(doc: Any, cameras: dict[str, tuple[int, int]] | None = None,
                      lengths: dict[int, int] | None = None) -> list[str]:
    """Problems of an annotation document ([] when fine). cameras {name: (W, H)} and lengths {episode: T}
    (when given) also bound the camera names, pixel coordinates and frame indices."""
    if not isinstance(doc, dict):
        return [f"annotation document must be a JSON object, got {type(doc).__name__}"]
    errs = []
    if doc.get("format") != ANNOTATION_FORMAT:
        errs.append(f"'format' must be {ANNOTATION_FORMAT!r}, got {doc.get('format')!r}")
    eps = doc.get("episodes")
    if not isinstance(eps, dict):
        return errs + ["'episodes' must be an object {episode: {frames: {...}}}"]
    for ek, ev in eps.items():
        w = f"episodes[{ek!r}]"
        if not isinstance(ev, dict) or not isinstance(ev.get("frames", {}), dict):
            errs.append(f"{w}: must be an object with 'frames'")
            continue
        ep_index = int(ek) if str(ek).isdigit() else None
        for fk, fv in ev.get("frames", {}).items():
            wf = f"{w}.frames[{fk!r}]"
            if not str(fk).isdigit():
                errs.append(f"{wf}: frame keys must be non-negative integers")
                continue
            if lengths is not None and ep_index is not None and ep_index in lengths and int(fk) >= lengths[ep_index]:
                errs.append(f"{wf}: frame {fk} is past the episode's last frame {lengths[ep_index] - 1}")
            if not isinstance(fv, dict):
                errs.append(f"{wf}: must be an object {{camera: [objects]}}")
                continue
            for cam, objs in fv.items():
                wc = f"{wf}[{cam!r}]"
                if cameras is not None and cam not in cameras:
                    errs.append(f"{wc}: unknown camera (dataset cameras: {sorted(cameras)})")
                if not isinstance(objs, list):
                    errs.append(f"{wc}: must be a list of objects")
                    continue
                names = []
                size = (cameras or {}).get(cam)
                for i, o in enumerate(objs):
                    wo = f"{wc}[{i}]"
                    if not isinstance(o, dict):
                        errs.append(f"{wo}: must be an object")
                        continue
                    name = o.get("name")
                    if not isinstance(name, str) or not name.strip():
                        errs.append(f"{wo}: 'name' must be a non-empty string")
                    else:
                        names.append(name.strip())
                    pt, bx = o.get("point"), o.get("box")
                    if pt is None and bx is None:
                        errs.append(f"{wo}: needs a 'point' [u, v] or a 'box' [x1, y1, x2, y2]")
                    if pt is not None and not (isinstance(pt, list) and len(pt) == 2 and all(_num(v) for v in pt)):
                        errs.append(f"{wo}: 'point' must be [u, v] (2 finite numbers)")
                        pt = None
                    if bx is not None:
                        if not (isinstance(bx, list) and len(bx) == 4 and all(_num(v) for v in bx)):
                            errs.append(f"{wo}: 'box' must be [x1, y1, x2, y2] (4 finite numbers)")
                            bx = None
                        elif not (bx[0] <= bx[2] and bx[1] <= bx[3]):
                            errs.append(f"{wo}: 'box' needs x1 <= x2 and y1 <= y2, got {bx}")
                    if size is not None:
                        W, H = size
                        for p in ([pt] if pt else []) + ([bx[:2], bx[2:]] if bx else []):
                            if not (-0.5 <= p[0] <= W - 0.5 and -0.5 <= p[1] <= H - 0.5):
                                errs.append(f"{wo}: coordinates {p} outside the {W}x{H} image")
                dup = sorted({n for n in names if names.count(n) > 1})
                if dup:
                    errs.append(f"{wc}: object names must be unique per frame and camera, repeated: {dup}")
    return errs


def empty_document(dataset: str = "") -> dict:
    return {"format": ANNOTATION_FORMAT, "dataset": dataset, "episodes": {}}


def load_annotations(path: str | Path, cameras=None, lengths=None) -> dict:
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"annotation file not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{p}: not valid JSON: {e}") from None
    errs = annotation_errors(doc, cameras, lengths)
    if errs:
        raise AnnotationError(f"{p}: " + "; ".join(errs[:10]) + (f" (+{len(errs) - 10} more)" if len(errs) > 10
                                                                  else ""))
    return doc


def annotations_for(doc: dict, index: int, episode_id: str | None = None) -> dict[int, dict[str, list[dict]]] | None:
    """{frame: {camera: [objects]}} of one episode (looked up by index, then by episode_id), or None."""
    eps = doc.get("episodes", {})
    ev = eps.get(str(index))
    if ev is None and episode_id is not None:
        ev = eps.get(str(episode_id))
    if ev is None:
        return None
    return {int(f): {c: list(objs) for c, objs in fv.items()} for f, fv in ev.get("frames", {}).items()}


def count_objects(doc: dict) -> int:
    return sum(len(objs) for ev in doc.get("episodes", {}).values() for fv in ev.get("frames", {}).values()
               for objs in fv.values())


# ------------------------------------------------------------------------------------------------ server
class AnnotationServer:
    """Local annotation web tool over a dataset. `start()` serves in a thread; `url`; `stop()`."""

    def __init__(self, episodes_dir, out_file: str | Path, port: int = 0, host: str = "127.0.0.1", reader=None):
        if host not in LOOPBACK:
            raise AnnotationError(f"the annotation tool only listens on loopback ({', '.join(LOOPBACK)}), "
                                  f"not {host!r}")
        if reader is None:
            from etc_training.etc.store import open_dataset

            reader = open_dataset(episodes_dir)
        self.reader = reader
        self.dataset = str(Path(episodes_dir).resolve()) if episodes_dir is not None else "memory"
        self.out = Path(out_file)
        self.lock = threading.Lock()
        self.cameras = self._cameras()
        self.lengths = {i: self._length(i) for i in range(int(reader.num_episodes))}
        if self.out.is_file():
            self.doc = load_annotations(self.out, self.cameras, self.lengths)
        else:
            self.doc = empty_document(self.dataset)
        if not (0 <= int(port) <= 65535):
            raise AnnotationError(f"port must be 0..65535, got {port}")
        self.httpd = ThreadingHTTPServer((host, int(port)), _make_handler(self))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def _cameras(self) -> dict[str, tuple[int, int]]:
        spec = getattr(self.reader, "spec", None)
        if spec is not None and getattr(spec, "cameras", None):
            return {c: (int(hw[1]), int(hw[0])) for c, hw in spec.cameras.items()}
        ep = self.reader.load_episode(0)
        return {c: (int(a.shape[2]), int(a.shape[1])) for c, a in ep.images.items()}

    def _length(self, i: int) -> int:
        m = self.reader.episode_meta(i) or {}
        if m.get("length") is not None:
            return int(m["length"])
        return len(self.reader.load_episode(i).state)

    def info(self) -> dict:
        eps = []
        for i in range(int(self.reader.num_episodes)):
            m = self.reader.episode_meta(i) or {}
            eps.append(dict(index=i, episode_id=str(m.get("episode_id") or f"episode_{i:06d}"),
                            length=self.lengths[i], instruction=m.get("instruction", ""),
                            split=m.get("split", ""), cameras=sorted(self.cameras)))
        return dict(dataset=self.dataset, out=str(self.out), episodes=eps,
                    cameras={c: list(wh) for c, wh in self.cameras.items()})

    def frame_png(self, episode: int, t: int, cam: str) -> bytes:
        from PIL import Image

        if episode not in self.lengths:
            raise AnnotationError(f"episode {episode} does not exist (0..{len(self.lengths) - 1})")
        if not 0 <= t < self.lengths[episode]:
            raise AnnotationError(f"episode {episode} has frames 0..{self.lengths[episode] - 1}, asked {t}")
        if cam not in self.cameras:
            raise AnnotationError(f"unknown camera {cam!r}; cameras: {sorted(self.cameras)}")
        with self.lock:
            if hasattr(self.reader, "episode_frame"):
                img = self.reader.episode_frame(episode, t, images=True)[image_key(cam)]
            else:
                img = self.reader.load_episode(episode).images[cam][t]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    def save(self, doc: Any) -> dict:
        errs = annotation_errors(doc, self.cameras, self.lengths)
        if errs:
            raise AnnotationError("; ".join(errs[:10]))
        with self.lock:
            doc = dict(doc)
            doc.setdefault("dataset", self.dataset)
            atomic_write_json(self.out, doc)
            self.doc = doc
        return dict(ok=True, objects=count_objects(doc), path=str(self.out))

    def start(self) -> "AnnotationServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="etc-annotate", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def _make_handler(app: AnnotationServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "etc-annotate/1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode("utf-8"), "application/json")

        def _local(self) -> bool:
            if self.client_address[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                self._json(403, {"error": "the annotation tool only answers loopback clients"})
                return False
            return True

        def do_GET(self):  # noqa: N802
            if not self._local():
                return
            u = urlparse(self.path)
            try:
                if u.path in ("/", "/index.html"):
                    self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                elif u.path == "/api/info":
                    self._json(200, app.info())
                elif u.path == "/api/annotations":
                    with app.lock:
                        self._json(200, app.doc)
                elif u.path == "/api/frame":
                    q = parse_qs(u.query)
                    try:
                        ep, t = int(q["episode"][0]), int(q["frame"][0])
                        cam = q.get("camera", [next(iter(app.cameras))])[0]
                    except (KeyError, ValueError, IndexError):
                        raise AnnotationError("/api/frame needs integer 'episode' and 'frame' (and 'camera')")
                    self._send(200, app.frame_png(ep, t, cam), "image/png")
                else:
                    self._json(404, {"error": f"no such path {u.path}"})
            except UserError as e:
                self._json(400, {"error": str(e)})

        def do_POST(self):  # noqa: N802
            if not self._local():
                return
            u = urlparse(self.path)
            if u.path != "/api/annotations":
                self._json(404, {"error": f"no such path {u.path}"})
                return
            try:
                n = int(self.headers.get("Content-Length", "0"))
                if n <= 0 or n > 50_000_000:
                    raise AnnotationError("POST /api/annotations needs a JSON body (at most 50 MB)")
                try:
                    doc = json.loads(self.rfile.read(n).decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise AnnotationError(f"body is not JSON: {e}") from None
                self._json(200, app.save(doc))
            except UserError as e:
                self._json(400, {"error": str(e)})

    return Handler

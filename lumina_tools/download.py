"""``python -m lumina_tools download NAME``: official checkpoints from the Hugging Face hub.

    python -m lumina_tools download --list
    python -m lumina_tools download Lumina-mGPT-7B-768 [--models-dir ComfyUI/models]

The transfer, checks and resume are ``comfy_lumina_mgpt.download``'s; this is its command line and text bar.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from comfy_lumina_mgpt.download import RELEASES, DownloadError, fetch


def default_models_dir() -> Path | None:
    """``<ComfyUI>/models`` when the pack sits in ``<ComfyUI>/custom_nodes/``, else None."""
    pack = Path(__file__).resolve().parents[1]  # the pack folder, in <ComfyUI>/custom_nodes/
    if pack.parent.name == "custom_nodes" and (pack.parent.parent / "models").is_dir():
        return pack.parent.parent / "models"
    return None


class _Bar:
    """A one-line text progress bar on stderr, redrawn at most a few times a second."""

    def __init__(self):
        self.started = time.monotonic()
        self.shown = 0.0

    def __call__(self, done: int, total: int, path: str) -> None:
        now = time.monotonic()
        if now - self.shown < 0.25 and done < total:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-6)
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 1e9:6.2f}/{total / 1e9:.2f} GB "
              f"{rate / 1e6:6.1f} MB/s  {path[-40:]:<40}", end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools download", description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="release to fetch (see --list)")
    parser.add_argument("--list", action="store_true", help="list the releases and where they go")
    parser.add_argument("--models-dir", help="ComfyUI's models folder (default: the one this pack is installed "
                                             "under)")
    parser.add_argument("--repo", help="hub repository to read instead of the release's own")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for release in RELEASES.values():
            source = release.repo_id or "(--repo OWNER/NAME)"
            print(f"{release.name:<20} {source:<36} -> models/{release.kind}/{release.folder}/\n"
                  f"{'':<20} {release.about}")
        return 0 if args.list else 2
    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    if models_dir is None:
        print("error: the pack is not inside ComfyUI/custom_nodes/; say where ComfyUI's models folder is with "
              "--models-dir", file=sys.stderr)
        return 2
    try:
        folder = fetch(args.name, models_dir, repo=args.repo, revision=args.revision, progress=_Bar())
    except DownloadError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"\n{args.name} is in {folder}")
    return 0

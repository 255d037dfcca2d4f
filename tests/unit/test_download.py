"""``python -m lumina_tools download``, end to end against a local server in the hub's file layout.

The command runs as users run it (a subprocess, ``HF_ENDPOINT`` pointing at the server); the release served is
a tiny model written in the official sharded layout under the name ``Alpha-VLLM/Lumina-mGPT-7B-768``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from comfy_lumina_mgpt.download import CHUNK_BYTES
from comfy_lumina_mgpt.model.loading import load_model, write_model_files
from comfy_lumina_mgpt.tokenizer import TextTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO = "Alpha-VLLM/Lumina-mGPT-7B-768"
NAME = "Lumina-mGPT-7B-768"


@pytest.fixture
def release(tmp_path, peaked_model, tiny_tokenizer_path):
    """The files of the served repository: config, weight shards and their index, the tokenizer files."""
    folder = tmp_path / "release"
    folder.mkdir()
    model = peaked_model(0)
    embedding = model.model.embed_tokens.weight
    write_model_files(model, folder, max_shard_bytes=embedding.numel() * embedding.element_size())
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    (folder / "tokenizer.json").write_bytes(Path(tiny_tokenizer_path).read_bytes())
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "special_tokens_map.json").write_text("{}")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    return folder


def first_shard(release: Path) -> str:
    return min(json.loads((release / "model.safetensors.index.json").read_text())["weight_map"].values())


def run_download(hub, models: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(models.parent / "hf-home"), PYTHONPATH=str(REPO_ROOT),
               **env_extra)
    return subprocess.run([sys.executable, "-m", "lumina_tools", "download", *args, "--models-dir",
                           str(models)], capture_output=True, text=True, env=env, timeout=120)


def same_files(release: Path, target: Path) -> None:
    for path in release.iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes(), path.name


def test_download_writes_a_loadable_folder_and_a_second_run_fetches_nothing(fake_hub, release, tmp_path,
                                                                          peaked_model):
    fake_hub.add_folder(REPO, release)
    models = tmp_path / "models"
    done = run_download(fake_hub, models, NAME)
    assert done.returncode == 0, done.stderr
    target = models / "lumina_mgpt" / NAME
    same_files(release, target)
    loaded = load_model(target)
    expected = peaked_model(0).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert TextTokenizer.from_file(target / "tokenizer.json").vocab.vocab_size == loaded.config.vocab_size

    gets_before = len(fake_hub.gets())
    again = run_download(fake_hub, models, NAME)
    assert again.returncode == 0, again.stderr
    assert fake_hub.gets()[gets_before:] == []  # only HEAD requests: nothing downloaded


def test_an_interrupted_download_resumes_where_it_stopped(fake_hub, release, tmp_path):
    fake_hub.add_folder(REPO, release)
    shard = first_shard(release)
    cut = CHUNK_BYTES + 1000  # the connection drops inside the second chunk: the first one is kept
    assert (release / shard).stat().st_size > cut
    fake_hub.cut_after[shard] = cut
    models = tmp_path / "models"
    target = models / "lumina_mgpt" / NAME
    first = run_download(fake_hub, models, NAME)
    assert first.returncode == 1
    assert f"stopped at {CHUNK_BYTES} of" in first.stderr and "run again to resume" in first.stderr
    assert not (target / shard).exists()
    assert not (target / "config.json").exists()  # the folder is not a model until it is complete
    parts = list((target / ".download").glob(f"{shard}.*.part"))
    assert [p.stat().st_size for p in parts] == [CHUNK_BYTES]

    second = run_download(fake_hub, models, NAME)
    assert second.returncode == 0, second.stderr
    assert fake_hub.gets(shard)[-1].range == f"bytes={CHUNK_BYTES}-"
    same_files(release, target)
    assert not list((target / ".download").glob("*.part"))


def test_a_file_that_fails_its_checksum_is_deleted(fake_hub, release, tmp_path):
    fake_hub.add_folder(REPO, release)
    shard = first_shard(release)
    fake_hub.corrupt.add(shard)
    models = tmp_path / "models"
    target = models / "lumina_mgpt" / NAME
    failed = run_download(fake_hub, models, NAME)
    assert failed.returncode == 1
    assert f"{shard}: its hash" in failed.stderr and "deleted" in failed.stderr
    assert not (target / shard).exists() and not list((target / ".download").glob("*.part"))
    assert not (target / "config.json").exists()

    fake_hub.corrupt.clear()  # the hub serves the right bytes again: the next run completes
    assert run_download(fake_hub, models, NAME).returncode == 0
    same_files(release, target)


def test_only_the_tokenizer_files_of_the_768_repository(fake_hub, release, tmp_path):
    fake_hub.add_folder(REPO, release)
    models = tmp_path / "models"
    assert run_download(fake_hub, models, "tokenizer").returncode == 0
    target = models / "lumina_mgpt" / NAME
    assert sorted(p.name for p in target.iterdir() if p.is_file()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("args,env,message", [
    ((NAME,), {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    (("Lumina-mGPT-9B",), {}, "unknown release 'Lumina-mGPT-9B'; choose one of Lumina-mGPT-7B-512"),
    ((NAME, "--repo", "someone/elsewhere"), {}, "repository someone/elsewhere was not found"),
    (("chameleon-vqgan",), {}, "--repo OWNER/NAME"),
])
def test_refusals_say_what_to_change(fake_hub, release, tmp_path, args, env, message):
    fake_hub.add_folder(REPO, release)
    failed = run_download(fake_hub, tmp_path / "models", *args, **env)
    assert failed.returncode == 1
    assert message in failed.stderr
    assert not (tmp_path / "models" / "lumina_mgpt" / NAME / "config.json").exists()


def test_the_vqgan_comes_from_a_named_repository_in_metas_layout(fake_hub, tmp_path):
    source = tmp_path / "meta"
    (source / "tokenizer").mkdir(parents=True)
    (source / "tokenizer" / "vqgan.yaml").write_text("model:\n  params: {}\n")
    (source / "tokenizer" / "vqgan.ckpt").write_bytes(b"\x00" * 3000)
    fake_hub.add_folder("me/chameleon-copy", source)
    models = tmp_path / "models"
    done = run_download(fake_hub, models, "chameleon-vqgan", "--repo", "me/chameleon-copy")
    assert done.returncode == 0, done.stderr
    target = models / "vq" / "chameleon"
    assert (target / "vqgan.ckpt").read_bytes() == b"\x00" * 3000
    assert (target / "vqgan.yaml").is_file()

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from app.runtime.demo_model import build_demo_pipeline, byte_level_clip_tokenizer, demo_model_exists, write_demo_model


def _digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        sha.update(path.relative_to(folder).as_posix().encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def test_written_folder_is_a_complete_diffusers_pipeline(runtime_demo_dir: Path) -> None:
    assert demo_model_exists(runtime_demo_dir)
    index = json.loads((runtime_demo_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert list((runtime_demo_dir / component).glob("*.safetensors")), component
    for tokenizer in ("tokenizer", "tokenizer_2"):
        assert (runtime_demo_dir / tokenizer).is_dir()
    assert not list(runtime_demo_dir.rglob("*.bin"))


def test_demo_model_exists_is_false_for_absent_or_partial_folders(tmp_path: Path) -> None:
    assert not demo_model_exists(tmp_path / "missing")
    assert not demo_model_exists(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    assert not demo_model_exists(tmp_path)
    (tmp_path / "ponyserve-demo.json").write_text('{"version": -1}')
    assert not demo_model_exists(tmp_path)


def test_weights_are_deterministic_in_the_seed(runtime_demo_dir: Path, tmp_path: Path) -> None:
    write_demo_model(tmp_path / "same", seed=0)
    write_demo_model(tmp_path / "other", seed=1)
    assert _digest(tmp_path / "same") == _digest(runtime_demo_dir)
    assert _digest(tmp_path / "other") != _digest(runtime_demo_dir)


def test_rewrite_replaces_the_folder_and_leaves_no_staging_behind(tmp_path: Path) -> None:
    target = tmp_path / "models" / "demo"
    write_demo_model(target, seed=1)
    (target / "stray.txt").write_text("from an older release")
    write_demo_model(target, seed=1)
    assert demo_model_exists(target)
    assert not (target / "stray.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["demo"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.runtime.demo_model as demo_model

    def explode(seed: int = 0, *, family: str = "sdxl") -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(demo_model, "build_demo_pipeline", explode)
    with pytest.raises(RuntimeError, match="boom"):
        write_demo_model(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_byte_level_tokenizer_encodes_any_text_and_survives_a_round_trip(tmp_path: Path) -> None:
    tokenizer = byte_level_clip_tokenizer()
    text = "score_9, Ünïcode 🐴 日本語 <tag> (weight:1.2)"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert len(tokenizer) == 256 * 2 + 2
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded(text).input_ids == ids
    assert reloaded.model_max_length == 77


def test_saved_tokenizers_reload_with_sdxl_padding(runtime_demo_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(runtime_demo_dir / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(runtime_demo_dir / "tokenizer_2")
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer_2.pad_token == "!"


def test_in_memory_pipeline_matches_the_architecture_notes() -> None:
    pipe = build_demo_pipeline(seed=0)
    assert pipe.vae_scale_factor == 8
    unet = pipe.unet.config
    assert unet.addition_embed_type == "text_time"
    hidden = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert unet.cross_attention_dim == hidden
    assert unet.projection_class_embeddings_input_dim == (
        pipe.text_encoder_2.config.projection_dim + 6 * unet.addition_time_embed_dim
    )
    assert tuple(unet.down_block_types) == ("DownBlock2D", "CrossAttnDownBlock2D")


def test_concurrent_writers_both_succeed(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "demo"
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_demo_model(target, seed=2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert demo_model_exists(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    write_demo_model(tmp_path / "alone", seed=2)
    assert _digest(target) == _digest(tmp_path / "alone")

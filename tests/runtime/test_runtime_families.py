"""SD3 and AuraFlow through the same runtime as SDXL, proven on tiny random models of each architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runtime_helpers import assert_images_close, flow_spec, pixel_difference

from app.config import ModelSpec
from app.runtime.demo_model import demo_model_exists, t5_tokenizer
from app.runtime.encoding import encode_image
from app.runtime.families import adapter_for, family_traits
from app.runtime.pipelines import LoadedModel, load_model
from app.runtime.registry import ModelRegistry
from app.runtime.samplers import samplers_for_family
from app.runtime.types import GenerationCancelled, GenerationParams, ImagePrompt, RuntimeModelError

SMALL = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler")


def _png(image: Image.Image) -> bytes:
    return encode_image(image, "png", None)


def test_family_models_load_with_their_own_pipelines(runtime_family_models: dict[str, LoadedModel]) -> None:
    sd3, auraflow = runtime_family_models["sd3"], runtime_family_models["auraflow"]
    assert type(sd3.pipeline).__name__ == "StableDiffusion3Pipeline"
    assert type(sd3.pipeline.text_encoder_3).__name__ == "T5EncoderModel"
    assert type(auraflow.pipeline).__name__ == "AuraFlowPipeline"
    assert type(auraflow.pipeline.text_encoder).__name__ == "UMT5EncoderModel"
    for model in (sd3, auraflow):
        assert model.dtype == torch.float32
        assert type(model.pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert model.spec.defaults.sampler == "Euler"
        assert model.memory_bytes > 0
        assert model.max_side == 1024
    assert sd3.max_clip_skip == 4
    assert auraflow.max_clip_skip is None


def test_image_has_the_requested_size(flow_model: LoadedModel) -> None:
    params = GenerationParams(width=128, height=96, steps=2, guidance_scale=5.0, sampler="Euler")
    [image] = flow_model.generate(params, [ImagePrompt("a pony", "", 1)])
    assert image.size == (128, 96)
    assert image.mode == "RGB"
    assert np.asarray(image).std() > 0


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(flow_model: LoadedModel) -> None:
    prompt = ImagePrompt("score_9, a pony in a meadow", "lowres", 1234)
    first = _png(flow_model.generate(SMALL, [prompt])[0])
    again = _png(flow_model.generate(SMALL, [prompt])[0])
    other = _png(flow_model.generate(SMALL, [ImagePrompt(prompt.prompt, prompt.negative_prompt, 1235)])[0])
    assert first == again
    assert first != other


def test_batch_matches_each_image_run_alone(flow_model: LoadedModel) -> None:
    images = [ImagePrompt("a red pony", "", 11), ImagePrompt("a blue dragon", "ugly, blurry", 12)]
    batch = flow_model.generate(SMALL, images)
    assert len(batch) == 2
    # The second image: it shares the batch with another prompt, seed and negative.
    [alone] = flow_model.generate(SMALL, images[1:])
    assert_images_close(batch[1], alone)
    assert pixel_difference(batch[0], batch[1]).max() > 10


def test_prompt_and_negative_prompt_change_the_image(flow_model: LoadedModel) -> None:
    [a] = flow_model.generate(SMALL, [ImagePrompt("a red pony", "", 5)])
    [b] = flow_model.generate(SMALL, [ImagePrompt("a blue dragon", "", 5)])
    [c] = flow_model.generate(SMALL, [ImagePrompt("a red pony", "blurry", 5)])
    assert len({_png(a), _png(b), _png(c)}) == 3


def test_guidance_at_one_skips_the_negative_prompt(flow_model: LoadedModel) -> None:
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=1.0, sampler="Euler")
    [a] = flow_model.generate(params, [ImagePrompt("a pony", "", 3)])
    [b] = flow_model.generate(params, [ImagePrompt("a pony", "something else entirely", 3)])
    assert _png(a) == _png(b)


@pytest.mark.parametrize("sampler", ["Euler", "Heun", "DPM++ 2M", "UniPC"])
def test_every_flow_sampler_runs_and_reports_each_step(flow_model: LoadedModel, sampler: str) -> None:
    assert samplers_for_family(flow_model.family) == ["Euler", "Heun", "DPM++ 2M", "UniPC"]
    seen: list[tuple[int, int]] = []

    def on_step(done: int, total: int) -> bool:
        seen.append((done, total))
        return True

    params = GenerationParams(width=64, height=64, steps=3, guidance_scale=5.0, sampler=sampler)
    [image] = flow_model.generate(params, [ImagePrompt("a", "b", 1)], on_step=on_step)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert np.asarray(image).std() > 0


def test_on_step_returning_false_cancels(flow_model: LoadedModel) -> None:
    params = GenerationParams(width=64, height=64, steps=4, guidance_scale=5.0, sampler="Euler")
    with pytest.raises(GenerationCancelled):
        flow_model.generate(params, [ImagePrompt("a", "b", 1)], on_step=lambda done, total: done < 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (GenerationParams(width=72, height=64, steps=2, guidance_scale=5.0, sampler="Euler"), "multiples of 16"),
        (GenerationParams(width=1040, height=64, steps=2, guidance_scale=5.0, sampler="Euler"), "largest side"),
        (GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler a"), "sampler"),
        (GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="DPM++ 2M Karras"), "sampler"),
    ],
)
def test_invalid_calls_fail_before_any_work(flow_model: LoadedModel, params: GenerationParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flow_model.generate(params, [ImagePrompt("a", "b", 1)])


def test_clip_skip_changes_sd3_and_is_ignored_by_auraflow(runtime_family_models: dict[str, LoadedModel]) -> None:
    def params(clip_skip: int | None) -> GenerationParams:
        return GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler", clip_skip=clip_skip)

    def embeds(model: LoadedModel, clip_skip: int | None) -> torch.Tensor:
        with torch.inference_mode():
            return model._encode_prompts(model.pipeline, params(clip_skip), [ImagePrompt("a pony", "bad", 9)])[
                "prompt_embeds"
            ]

    sd3 = runtime_family_models["sd3"]
    assert torch.equal(embeds(sd3, 2), embeds(sd3, None))
    assert not torch.equal(embeds(sd3, 1), embeds(sd3, None))
    with pytest.raises(ValueError, match="clip_skip"):
        sd3.check(params(5), [ImagePrompt("a", "b", 1)])
    # A T5-only model has no CLIP layers to skip; A1111 clients send the setting anyway.
    auraflow = runtime_family_models["auraflow"]
    assert auraflow.effective_clip_skip(params(3)) is None
    auraflow.check(params(12), [ImagePrompt("a", "b", 1)])
    assert torch.equal(embeds(auraflow, 12), embeds(auraflow, None))


def test_sd3_clip_skip_reaches_the_negative_prompt(runtime_family_models: dict[str, LoadedModel]) -> None:
    model = runtime_family_models["sd3"]
    pipe = model.pipeline
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler", clip_skip=3)
    with torch.inference_mode():
        expected, _, expected_pooled, _ = pipe.encode_prompt(
            prompt=["bad"], prompt_2=None, prompt_3=None, do_classifier_free_guidance=False, clip_skip=1
        )
        embeds = model._encode_prompts(pipe, params, [ImagePrompt("a pony", "bad", 1)])
    assert torch.equal(embeds["negative_prompt_embeds"], expected)
    assert torch.equal(embeds["negative_pooled_prompt_embeds"], expected_pooled)


def test_model_clip_skip_is_the_default_for_requests(
    runtime_family_dirs: dict[str, Path], runtime_family_models: dict[str, LoadedModel]
) -> None:
    spec = flow_spec("sd3-skip", "sd3", runtime_family_dirs["sd3"], clip_skip=1)
    model = LoadedModel(spec, "cpu", torch.float32, runtime_family_models["sd3"].pipeline)
    assert model.effective_clip_skip(SMALL) == 1
    assert model.effective_clip_skip(GenerationParams(64, 64, 2, 5.0, "Euler", clip_skip=2)) == 2


def test_folder_of_another_family_is_refused(runtime_family_dirs: dict[str, Path], runtime_demo_dir: Path) -> None:
    with pytest.raises(RuntimeModelError, match="not a Stable Diffusion 3 one"):
        load_model(flow_spec("wrong", "sd3", runtime_family_dirs["auraflow"]), "cpu")
    with pytest.raises(RuntimeModelError, match="not a AuraFlow one"):
        load_model(flow_spec("wrong", "auraflow", runtime_demo_dir), "cpu")
    with pytest.raises(RuntimeModelError, match="not a Stable Diffusion XL one"):
        load_model(
            ModelSpec(name="wrong", path=runtime_family_dirs["sd3"], defaults={"width": 512, "height": 512}), "cpu"
        )


def test_sdxl_single_file_is_refused_for_flow_families(runtime_demo_checkpoint: Path) -> None:
    # Their own single files load (test_runtime_single_file_families); an SDXL one is explained.
    for family, name in (("sd3", "a Stable Diffusion 3"), ("auraflow", "an AuraFlow")):
        with pytest.raises(RuntimeModelError, match=f"not {name} checkpoint: it is a Stable Diffusion XL checkpoint"):
            load_model(flow_spec("single", family, runtime_demo_checkpoint), "cpu")


def test_flow_models_serve_through_the_registry(runtime_family_dirs: dict[str, Path]) -> None:
    specs = [flow_spec(f"m-{family}", family, path) for family, path in runtime_family_dirs.items()]
    registry = ModelRegistry(specs, "cpu")
    with registry.use("m-auraflow") as model:
        assert model.family == "auraflow"
        assert len(model.generate(SMALL, [ImagePrompt("a", "", 1)])) == 1
    assert registry.loaded_names() == ["m-auraflow"]


def test_demo_marker_records_the_family(runtime_family_dirs: dict[str, Path]) -> None:
    path = runtime_family_dirs["sd3"]
    assert demo_model_exists(path, "sd3")
    assert not demo_model_exists(path)
    assert json.loads((path / "ponyserve-demo.json").read_text())["family"] == "sd3"
    index = json.loads((path / "model_index.json").read_text())
    assert index["tokenizer_3"] == ["transformers", "T5Tokenizer"]


def test_t5_tokenizer_survives_a_round_trip(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = t5_tokenizer()
    texts = ["score_9, a pony (weight:1.2)", "Ünïcode 🐴 text"]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(texts).input_ids == tokenizer(texts).input_ids
    ids = tokenizer(texts[0]).input_ids
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == texts[0]
    # Characters outside the vocabulary become <unk>, as with the real T5 tokenizer.
    assert tokenizer.unk_token_id in tokenizer(texts[1]).input_ids


def test_adapters_match_their_traits() -> None:
    for family in ("sdxl", "sd3", "auraflow"):
        adapter = adapter_for(family)
        assert adapter.traits is family_traits(family)
    assert adapter_for("sdxl").denoiser_attr == "unet"
    assert adapter_for("sd3").denoiser_attr == adapter_for("auraflow").denoiser_attr == "transformer"
    with pytest.raises(KeyError):
        adapter_for("flux")

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from runtime_helpers import assert_images_close, pixel_difference

from app.config import ModelSpec
from app.runtime.encoding import encode_image
from app.runtime.pipelines import LoadedModel, a1111_to_diffusers_clip_skip, load_model, resolve_dtype
from app.runtime.types import GenerationCancelled, GenerationParams, ImagePrompt, RuntimeModelError

SMALL = GenerationParams(width=64, height=64, steps=3, guidance_scale=5.0, sampler="Euler a")


def _png(image: Image.Image) -> bytes:
    return encode_image(image, "png", None)


def test_loaded_demo_model_runs_in_float32_on_cpu(runtime_model: LoadedModel) -> None:
    assert runtime_model.device == "cpu"
    assert runtime_model.dtype == torch.float32
    assert runtime_model.spec.name == "demo"
    assert runtime_model.max_clip_skip == 4


def test_image_has_the_requested_size(runtime_model: LoadedModel) -> None:
    params = GenerationParams(width=256, height=192, steps=2, guidance_scale=5.0, sampler="Euler a")
    [image] = runtime_model.generate(params, [ImagePrompt("a pony", "", 1)])
    assert image.size == (256, 192)
    assert image.mode == "RGB"


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(runtime_model: LoadedModel) -> None:
    prompt = ImagePrompt("score_9, a pony in a meadow", "lowres", 1234)
    first = _png(runtime_model.generate(SMALL, [prompt])[0])
    again = _png(runtime_model.generate(SMALL, [prompt])[0])
    other = _png(runtime_model.generate(SMALL, [ImagePrompt(prompt.prompt, prompt.negative_prompt, 1235)])[0])
    assert first == again
    assert first != other


def test_batch_matches_each_image_run_alone(runtime_model: LoadedModel) -> None:
    images = [ImagePrompt("a red pony", "", 11), ImagePrompt("a blue dragon", "ugly, blurry", 12)]
    batch = runtime_model.generate(SMALL, images)
    assert len(batch) == 2
    for image, prompt in zip(batch, images, strict=True):
        [alone] = runtime_model.generate(SMALL, [prompt])
        # Batched kernels round differently from a call of one.
        assert_images_close(image, alone)
    assert pixel_difference(batch[0], batch[1]).max() > 10


def test_prompt_changes_the_image(runtime_model: LoadedModel) -> None:
    [a] = runtime_model.generate(SMALL, [ImagePrompt("a red pony", "", 5)])
    [b] = runtime_model.generate(SMALL, [ImagePrompt("a blue dragon", "", 5)])
    assert _png(a) != _png(b)


def test_on_step_reports_each_step_once_in_order(runtime_model: LoadedModel) -> None:
    for sampler in ("Euler a", "Heun", "PLMS"):
        seen: list[tuple[int, int]] = []

        def on_step(done: int, total: int, seen: list[tuple[int, int]] = seen) -> bool:
            seen.append((done, total))
            return True

        params = GenerationParams(width=64, height=64, steps=4, guidance_scale=5.0, sampler=sampler)
        runtime_model.generate(params, [ImagePrompt("a", "b", 1)], on_step=on_step)
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)], sampler


def test_on_step_returning_false_cancels_at_that_step(runtime_model: LoadedModel) -> None:
    seen: list[int] = []

    def on_step(done: int, total: int) -> bool:
        seen.append(done)
        return done < 2

    params = GenerationParams(width=64, height=64, steps=5, guidance_scale=5.0, sampler="Euler a")
    with pytest.raises(GenerationCancelled):
        runtime_model.generate(params, [ImagePrompt("a", "b", 1)], on_step=on_step)
    assert seen == [1, 2]
    # The model stays usable after a cancelled call.
    assert len(runtime_model.generate(SMALL, [ImagePrompt("a", "b", 1)])) == 1


def test_guidance_at_one_skips_the_negative_prompt(runtime_model: LoadedModel) -> None:
    params = GenerationParams(width=64, height=64, steps=2, guidance_scale=1.0, sampler="Euler")
    [a] = runtime_model.generate(params, [ImagePrompt("a pony", "", 3)])
    [b] = runtime_model.generate(params, [ImagePrompt("a pony", "something else entirely", 3)])
    assert _png(a) == _png(b)


def test_negative_prompt_matters_under_guidance(runtime_model: LoadedModel) -> None:
    [a] = runtime_model.generate(SMALL, [ImagePrompt("a pony", "", 3)])
    [b] = runtime_model.generate(SMALL, [ImagePrompt("a pony", "blurry", 3)])
    assert _png(a) != _png(b)


def test_clip_skip_follows_a1111_numbering(runtime_model: LoadedModel) -> None:
    assert a1111_to_diffusers_clip_skip(None) is None
    assert a1111_to_diffusers_clip_skip(2) is None
    assert a1111_to_diffusers_clip_skip(1) == -1
    assert a1111_to_diffusers_clip_skip(3) == 1

    def render(clip_skip: int | None) -> bytes:
        params = GenerationParams(
            width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler", clip_skip=clip_skip
        )
        return _png(runtime_model.generate(params, [ImagePrompt("a pony", "bad", 9)])[0])

    default = render(None)
    assert render(2) == default
    assert render(1) != default
    assert render(3) != default


def test_clip_skip_reaches_the_negative_prompt_too(runtime_model: LoadedModel) -> None:
    pipe = runtime_model.pipeline
    with torch.inference_mode():
        expected, _, _, _ = pipe.encode_prompt(prompt=["bad"], do_classifier_free_guidance=False, clip_skip=1)
        embeds = runtime_model._encode_prompts(
            pipe,
            GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler", clip_skip=3),
            [ImagePrompt("a pony", "bad", 1)],
        )
    assert torch.equal(embeds["negative_prompt_embeds"], expected)


def test_empty_negative_prompt_gives_zero_embeddings_per_image(runtime_model: LoadedModel) -> None:
    with torch.inference_mode():
        embeds = runtime_model._encode_prompts(
            runtime_model.pipeline, SMALL, [ImagePrompt("a", "", 1), ImagePrompt("b", "bad", 2)]
        )
    negative = embeds["negative_prompt_embeds"]
    assert torch.count_nonzero(negative[0]) == 0
    assert torch.count_nonzero(embeds["negative_pooled_prompt_embeds"][0]) == 0
    assert torch.count_nonzero(negative[1]) > 0


@pytest.mark.parametrize(
    ("params", "images", "message"),
    [
        (GenerationParams(width=60, height=64, steps=2, guidance_scale=5.0, sampler="Euler a"), 1, "multiples of 8"),
        (GenerationParams(width=64, height=64, steps=0, guidance_scale=5.0, sampler="Euler a"), 1, "steps"),
        (GenerationParams(width=64, height=64, steps=2, guidance_scale=-1.0, sampler="Euler a"), 1, "guidance"),
        (GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="LMS"), 1, "sampler"),
        (
            GenerationParams(width=64, height=64, steps=2, guidance_scale=5.0, sampler="Euler", clip_skip=5),
            1,
            "clip_skip",
        ),
        (SMALL, 0, "at least one"),
    ],
)
def test_invalid_calls_fail_before_any_work(
    runtime_model: LoadedModel, params: GenerationParams, images: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        runtime_model.generate(params, [ImagePrompt("a", "b", 1)] * images)


def test_out_of_range_seed_is_rejected(runtime_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="seed"):
        runtime_model.generate(SMALL, [ImagePrompt("a", "b", 2**64)])


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")


def _spec(path: Path) -> ModelSpec:
    return ModelSpec(name="broken", path=path, defaults={"width": 512, "height": 512})


def test_missing_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeModelError, match="does not exist"):
        load_model(_spec(tmp_path / "nope"), "cpu")


def test_directory_without_model_index_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeModelError, match=r"model_index\.json"):
        load_model(_spec(tmp_path), "cpu")


def test_non_sdxl_folder_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(RuntimeModelError, match="not a Stable Diffusion XL"):
        load_model(_spec(tmp_path), "cpu")


def test_folder_with_missing_weights_is_a_model_error(runtime_demo_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "demo"
    broken.mkdir()
    for item in runtime_demo_dir.rglob("*"):
        target = broken / item.relative_to(runtime_demo_dir)
        if item.is_dir():
            target.mkdir(exist_ok=True)
        elif item.name != "diffusion_pytorch_model.safetensors" or item.parent.name != "unet":
            target.write_bytes(item.read_bytes())
    with pytest.raises(RuntimeModelError, match="cannot load"):
        load_model(_spec(broken), "cpu")


def test_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"not really a pickle")
    with pytest.raises(RuntimeModelError, match="pickle"):
        load_model(_spec(path), "cpu")


def test_corrupt_safetensors_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(RuntimeModelError, match="not a readable safetensors"):
        load_model(_spec(path), "cpu")


def test_sd15_checkpoint_is_refused_with_a_reason(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "sd15.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(1),
        },
        str(path),
    )
    with pytest.raises(RuntimeModelError, match=r"1\.x/2\.x"):
        load_model(_spec(path), "cpu")

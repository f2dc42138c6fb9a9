"""img2img and inpainting in the runtime: pipelines made from the loaded text-to-image components."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.runtime.pipelines import LoadedModel
from app.runtime.types import GenerationParams, ImagePrompt, LoraUse


def _init(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def _params(**kw: object) -> GenerationParams:
    return GenerationParams(**{"width": 64, "height": 64, "steps": 6, "guidance_scale": 5.0, "sampler": "Euler a",
                               "strength": 0.5, **kw})  # type: ignore[arg-type]


def _array(image: Image.Image) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_img2img_is_seeded_sized_and_follows_its_init_image(runtime_model: LoadedModel) -> None:
    # The demo VAE is random, so only a low strength leaves much of the init image: what the test needs.
    init, low = _init(), _params(strength=0.2)
    one = runtime_model.generate(low, [ImagePrompt("a pony", "", 5, init_image=init)])
    again = runtime_model.generate(low, [ImagePrompt("a pony", "", 5, init_image=init)])
    other_init = runtime_model.generate(low, [ImagePrompt("a pony", "", 5, init_image=_init(1))])
    stronger = runtime_model.generate(_params(strength=0.9), [ImagePrompt("a pony", "", 5, init_image=init)])
    assert one[0].size == (64, 64)
    assert np.abs(_array(one[0]) - _array(again[0])).max() <= 2
    assert np.abs(_array(one[0]) - _array(other_init[0])).mean() > 5
    assert np.abs(_array(one[0]) - _array(stronger[0])).mean() > 5


def test_inpainting_keeps_every_pixel_outside_the_mask(runtime_model: LoadedModel) -> None:
    init, mask = _init(), _mask()
    [out] = runtime_model.generate(_params(strength=0.9), [ImagePrompt("a pony", "", 5, init_image=init, mask=mask)])
    got, original = _array(out), _array(init)
    inside = np.asarray(mask) > 0
    assert (got[~inside] == original[~inside]).all()
    assert np.abs(got[inside] - original[inside]).mean() > 5


def test_img2img_with_a_lora_uses_the_same_adapters(runtime_demo_spec, runtime_demo_dir) -> None:  # type: ignore[no-untyped-def]
    from app.config import demo_lora_path
    from app.runtime.pipelines import load_model

    # A model of its own: adapters stay in a pipeline once loaded, and the session's model is compared
    # weight for weight by other tests.
    model = load_model(runtime_demo_spec, "cpu")
    lora = (LoraUse("demo-style", str(demo_lora_path(runtime_demo_dir)), 1.0, 1.0),)
    init = _init()
    plain = model.generate(_params(strength=0.9), [ImagePrompt("a pony", "", 5, init_image=init)])
    styled = model.generate(_params(strength=0.9, loras=lora), [ImagePrompt("a pony", "", 5, init_image=init)])
    assert np.abs(_array(plain[0]) - _array(styled[0])).mean() > 2


@pytest.mark.parametrize("prompt, message", [
    (ImagePrompt("p", "", 1, init_image=Image.new("RGB", (32, 32))), "init image"),
    (ImagePrompt("p", "", 1, init_image=_init(), mask=Image.new("L", (32, 32))), "mask"),
])
def test_inputs_of_the_wrong_size_are_refused_before_any_work(runtime_model: LoadedModel, prompt: ImagePrompt,
                                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        runtime_model.generate(_params(), [prompt])


def test_sd3_has_img2img_and_inpainting_and_auraflow_says_it_has_none(
        runtime_family_models: dict[str, LoadedModel]) -> None:
    from app.runtime.types import RuntimeModelError

    sd3, init, mask = runtime_family_models["sd3"], _init(), _mask()
    params = _params(sampler="Euler", strength=0.6)
    [plain] = sd3.generate(params, [ImagePrompt("a pony", "", 5, init_image=init)])
    [painted] = sd3.generate(params, [ImagePrompt("a pony", "", 5, init_image=init, mask=mask)])
    assert plain.size == painted.size == (64, 64)
    keep = np.asarray(mask) == 0
    assert (_array(painted)[keep] == _array(init)[keep]).all()
    with pytest.raises(RuntimeModelError, match="no img2img pipeline"):
        runtime_family_models["auraflow"].generate(params, [ImagePrompt("a pony", "", 5, init_image=init)])

"""ConvNeXt (V1, V2) from HF and timm layouts: logits equal to HF transformers' own models built
with random weights, in float32, and on an input where the first normalisation's epsilon
shows. (The Keras CNNs: tests/test_keras_models.py.)"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from tljax import weights  # noqa: E402

from tests.helpers import relative_error, square_images  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _randomize(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            noise = torch.randn(tensor.shape, generator=gen)
            tensor.add_((0.1 if tensor.ndim == 1 else 0.05) * noise)
    return model.eval()


def _convnext(tmp_path, v2, stem_scale=1.0):
    torch.manual_seed(0)
    kw = dict(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, num_labels=5, layer_norm_eps=1e-6 if v2 else 1e-12)
    model = (transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(**kw)) if v2
             else transformers.ConvNextForImageClassification(transformers.ConvNextConfig(**kw)))
    model = _randomize(model)
    if stem_scale != 1.0:
        prefix = "convnextv2" if v2 else "convnext"
        with torch.no_grad():
            for name in ("weight", "bias"):
                getattr(getattr(model, prefix).embeddings.patch_embeddings, name).mul_(stem_scale)
    model.save_pretrained(tmp_path)
    return model


def _torch_logits(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()


@pytest.mark.parametrize("v2", [False, True])
def test_convnext_equals_hugging_face(v2, tmp_path):
    reference = _convnext(tmp_path, v2)
    loaded = weights.load_model(str(tmp_path))
    assert (loaded.module.grn, loaded.module.layer_scale) == (v2, not v2)
    for size in (32, 40):  # and a size the stride-4 stem and 2x2 downsampling do not divide evenly
        images = square_images(size)
        assert relative_error(loaded.module.apply(loaded.variables, images),
                               _torch_logits(reference, images)) <= 1e-4


def test_convnext_layernorm_epsilons_show_on_a_near_constant_stem(tmp_path):
    """Stem scaled by 1e-3: the stem LayerNorm sees variance ~1e-8, where its 1e-6 (HF and
    timm hard-code it) decides the output; 1e-5 would not match."""
    reference = _convnext(tmp_path, False, stem_scale=1e-3)
    loaded = weights.load_model(str(tmp_path))
    images = square_images(32)
    expected = _torch_logits(reference, images)
    assert relative_error(loaded.module.apply(loaded.variables, images), expected) <= 1e-4
    from tljax.models import convnext
    original = convnext.INNER_EPS
    try:
        convnext.INNER_EPS = 1e-5
        assert relative_error(loaded.module.apply(loaded.variables, images), expected) > 1e-3
    finally:
        convnext.INNER_EPS = original


def _timm_convnext_state_dict(folder, v2):
    """HF ConvNeXt weights under timm's names (timm models/convnext.py), written here
    independently of tljax's layouts."""
    from safetensors.numpy import load_file

    sd = load_file(str(folder / "model.safetensors"))
    p = "convnextv2." if v2 else "convnext."
    out = {"stem.0.weight": sd[p + "embeddings.patch_embeddings.weight"],
           "stem.0.bias": sd[p + "embeddings.patch_embeddings.bias"],
           "stem.1.weight": sd[p + "embeddings.layernorm.weight"], "stem.1.bias": sd[p + "embeddings.layernorm.bias"],
           "head.norm.weight": sd[p + "layernorm.weight"], "head.norm.bias": sd[p + "layernorm.bias"],
           "head.fc.weight": sd["classifier.weight"], "head.fc.bias": sd["classifier.bias"]}
    for key, value in sd.items():
        if ".encoder.stages." not in key:
            continue
        rest = key.split(".encoder.stages.")[1]
        rest = (rest.replace("downsampling_layer", "downsample").replace(".layers.", ".blocks.")
                .replace("dwconv", "conv_dw").replace("layernorm", "norm").replace("pwconv1", "mlp.fc1")
                .replace("pwconv2", "mlp.fc2").replace("layer_scale_parameter", "gamma")
                .replace(".grn.", ".mlp.grn."))
        out[f"stages.{rest}"] = value.reshape(-1) if ".grn." in key else value
    return out


@pytest.mark.parametrize("v2", [False, True])
def test_convnext_timm_layout(v2, tmp_path):
    from safetensors.numpy import save_file

    reference = _convnext(tmp_path / "hf", v2)
    save_file(_timm_convnext_state_dict(tmp_path / "hf", v2), str(tmp_path / "convnext.safetensors"))
    loaded = weights.load_model(str(tmp_path / "convnext.safetensors"))
    images = square_images(32)
    # timm's final norm uses eps 1e-6; the HF reference is built with the same for V2 only.
    if not v2:
        loaded = loaded._replace(module=loaded.module.clone(ln_eps=1e-12))
    assert relative_error(loaded.module.apply(loaded.variables, images), _torch_logits(reference, images)) <= 1e-4

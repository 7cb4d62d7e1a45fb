"""DINOv2 (with and without registers, MLP and SwiGLU), CLIP and SigLIP image towers loaded from
Hugging Face folders: logits or pooled features equal to HF transformers' own models at the
checkpoint's resolution, at another one (position embeddings resampled as each model's code
does), and where the first LayerNorm's input variance is near its epsilon.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from flax import traverse_util  # noqa: E402

from tljax import models, weights  # noqa: E402
from tljax.models import names  # noqa: E402
from tljax.weights import merge  # noqa: E402

from tests.helpers import relative_error, square_images  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=4)


def _randomize(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            noise = torch.randn(tensor.shape, generator=gen)
            tensor.add_((0.1 if tensor.ndim == 1 and "norm" in name else 0.05) * noise)
    return model.eval()


def _dinov2(**kw):
    cfg = transformers.Dinov2Config(**TOWER, image_size=16, num_labels=5, **kw)
    return transformers.Dinov2ForImageClassification(cfg)


def _dinov2_registers():
    cfg = transformers.Dinov2WithRegistersConfig(**TOWER, image_size=16, num_labels=5,
                                                 num_register_tokens=2)
    return transformers.Dinov2WithRegistersForImageClassification(cfg)


def _clip(classifier=False):
    vision = dict(TOWER, intermediate_size=64, image_size=16)  # quick_gelu, eps 1e-5: the defaults
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                vocab_size=50)
    if classifier:  # its head reads the mean patch token before post_layernorm
        cfg = transformers.CLIPConfig(vision_config=vision, text_config=text, num_labels=5)
        return transformers.CLIPForImageClassification(cfg)
    return transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision, text_config=text,
                                                          projection_dim=8))


def _siglip(classifier=False):
    vision = dict(TOWER, intermediate_size=64, image_size=16)
    if classifier:
        cfg = transformers.SiglipConfig(vision_config=vision, num_labels=5)
        return transformers.SiglipForImageClassification(cfg)
    return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision))


def _vit():
    cfg = transformers.ViTConfig(**TOWER, intermediate_size=64, image_size=16, num_labels=5)
    return transformers.ViTForImageClassification(cfg)


# name -> (HF model maker, what tljax compares: "logits" or the pooled output "features",
#          the pos_resize the loader must pick)
MODELS = {
    "vit": (_vit, "logits", "bicubic"),
    "dinov2": (_dinov2, "logits", "bicubic"),
    "dinov2_swiglu": (lambda: _dinov2(use_swiglu_ffn=True, hidden_act="gelu"), "logits", "bicubic"),
    "dinov2_registers": (_dinov2_registers, "logits", "bicubic_antialias"),
    "clip": (_clip, "features", "bicubic"),
    "clip_classifier": (lambda: _clip(classifier=True), "logits", "bicubic"),
    "siglip": (_siglip, "features", "bicubic"),
    "siglip_classifier": (lambda: _siglip(classifier=True), "logits", "bicubic"),
}


def _saved(name, tmp_path, embed_scale=1.0):
    """The HF model `name` with random weights, saved; `embed_scale` shrinks the patch and
    position embeddings (and class/register tokens) so the first LayerNorm sees inputs of
    variance near its epsilon."""
    torch.manual_seed(0)
    model = _randomize(MODELS[name][0]())
    if embed_scale != 1.0:
        with torch.no_grad():
            for key, tensor in model.named_parameters():
                if "embedding" in key and "text" not in key:
                    tensor.mul_(embed_scale)
    model.save_pretrained(tmp_path)
    return model


def _reference(name, model, images):
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        if name == "clip":
            return model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output.numpy()
        if name.startswith("siglip"):
            out = model(pixel_values=pixels, interpolate_pos_encoding=True)
            return (out.pooler_output if name == "siglip" else out.logits).numpy()
        if name in ("vit", "clip_classifier"):
            return model(pixel_values=pixels, interpolate_pos_encoding=True).logits.numpy()
        return model(pixel_values=pixels).logits.numpy()  # DINOv2 always interpolates


def _ours(name, loaded, images):
    module, variables = loaded.module, loaded.variables
    logits, state = module.apply(variables, images, train=False, mutable=[names.INTERMEDIATES])
    if MODELS[name][1] == "logits":
        return np.asarray(logits)
    return np.asarray(state[names.INTERMEDIATES][names.HEAD_INPUT][0])


@pytest.mark.parametrize("name", list(MODELS))
def test_modern_vits_equal_hugging_face_at_two_resolutions(name, tmp_path):
    reference = _saved(name, tmp_path)
    classes = None if MODELS[name][1] == "logits" else 3
    # native 4x4 grid; 6x6 resampled; 3x3 (down, where antialias differs) for DINOv2 only
    for size in (16, 24, 12) if name.startswith("dinov2") else (16, 24):
        shape = None if size == 16 else (size, size, 3)
        loaded = weights.load_model(str(tmp_path), num_classes=classes, image_shape=shape)
        assert models.pos_resize(loaded.module) == MODELS[name][2]
        images = square_images(size)
        expected = _reference(name, reference, images)
        error = relative_error(_ours(name, loaded, images), expected)
        assert error <= 1e-4, f"{name} at {size}px: relative error {error:.2e}"
    # The resampler is visible: the other torch variant misses at 6x6.
    other = "bicubic" if MODELS[name][2] == "bicubic_antialias" else "bicubic_antialias"
    loaded = weights.load_model(str(tmp_path), model=f"vit:pos_resize={other}", num_classes=classes,
                                image_shape=(24, 24, 3))
    images = square_images(24)
    assert relative_error(_ours(name, loaded, images), _reference(name, reference, images)) > 1e-3


@pytest.mark.parametrize("name", ["dinov2_registers", "clip", "siglip"])
def test_epsilons_are_the_checkpoints_on_a_near_constant_layernorm_input(name, tmp_path):
    """Embeddings scaled by 1e-3: the LayerNorms after them see variance ~1e-7, where the
    checkpoint's epsilon (DINOv2 1e-6 from config.json, CLIP 1e-5, SigLIP 1e-6) matters, as
    another epsilon shows."""
    reference = _saved(name, tmp_path, embed_scale=1e-3)
    loaded = weights.load_model(str(tmp_path), num_classes=None if MODELS[name][1] == "logits" else 3)
    images = 1e-2 * square_images(16)
    expected = _reference(name, reference, images)
    assert relative_error(_ours(name, loaded, images), expected) <= 1e-4
    other = loaded._replace(module=loaded.module.clone(ln_eps=loaded.module.ln_eps * 10))
    assert relative_error(_ours(name, other, images), expected) > 1e-3


def test_dinov2_preprocessing_and_the_stored_grid_travel_with_the_weights(tmp_path):
    """A DINOv2 folder stores a larger grid than it runs at (518 px pretraining, 224 px
    eval): the model is built at its preprocessor's crop, resampled once from the stored grid,
    with DINOv2's resize/crop and ImageNet mean/std recorded."""
    reference = _saved("dinov2", tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_center_crop": True, "crop_size": {"height": 12, "width": 12},
        "size": {"shortest_edge": 14}, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225]}))
    loaded = weights.load_model(str(tmp_path))
    assert loaded.preprocessing["pp_eval"] == (
        "resize_small(14)|central_crop(12)|normalize([0.485,0.456,0.406],[0.229,0.224,0.225])")
    assert loaded.variables["params"]["embed"]["pos_embedding"].shape == (1, 1 + 9, 32)
    images = square_images(12)
    assert relative_error(_ours("dinov2", loaded, images), _reference("dinov2", reference, images)) <= 1e-4


def test_each_parameter_of_the_new_options_belongs_to_the_depth_group_it_should(tmp_path):
    """Registers with the embeddings; LayerScale in its block; SigLIP's MAP head in the top
    unit with the final norm (last_k:1 trains last block, norm, MAP and head)."""
    for name in ("dinov2_registers", "siglip", "clip", "clip_classifier"):
        _saved(name, tmp_path / name)
        loaded = weights.load_model(str(tmp_path / name), num_classes=3)
        groups = models.groups(loaded.module)
        flat = traverse_util.flatten_dict(loaded.variables["params"], sep="/")
        owner = {p: models.group_of(p, groups) for p in flat}
        units = models.depth_groups(groups)
        if name == "dinov2_registers":
            assert owner["embed/registers"] == "embed" and owner["encoder/block1/ls2/gamma"] == "block1"
        if name == "siglip":
            assert {owner[p] for p in flat if p.startswith("map/")} == {names.FINAL_NORM}
            assert units[-1] == ["block1", names.FINAL_NORM]
        if name == "clip":
            assert owner["embed/pre_norm/scale"] == "embed" and "embed/patch/bias" not in flat
        if name == "clip_classifier":  # no final norm: the top unit is the last block alone
            assert not any(p.startswith("encoder/norm/") for p in flat) and units[-1] == ["block1"]


def test_torch_bicubic_resamplers_equal_torch_interpolate():
    """The two torch bicubic variants, up and down, against torch itself."""
    grid = np.random.default_rng(0).normal(size=(5, 5, 3))
    pixels = torch.from_numpy(grid.transpose(2, 0, 1)[None])
    for new in (8, 3):
        for method, antialias in (("bicubic", False), ("bicubic_antialias", True)):
            expected = torch.nn.functional.interpolate(pixels, size=(new, new), mode="bicubic",
                                                       align_corners=False, antialias=antialias)
            np.testing.assert_allclose(merge.RESAMPLERS[method](grid, new),
                                       expected[0].numpy().transpose(1, 2, 0), atol=1e-12)


def test_a_dataset_config_trains_from_a_hub_backbone_offline(tmp_path, monkeypatch):
    """configs/flowers.py:dinov2-b14 end to end with the network off: model.init
    hf:facebook/dinov2-base resolves in a (fake, tiny) Hugging Face cache, the stored grid is
    resampled to the run's resolution, init_norm becomes DINOv2's ImageNet mean/std, and a
    linear probe leaves the backbone bit-identical."""
    from huggingface_hub import constants

    from tests.test_dataset_configs import _mock
    from tests.test_weights import _fake_hub_cache
    from tljax import config_lib, runs
    from tljax.weights import tljax_format

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder = tmp_path / "dinov2"
    _saved("dinov2_registers", folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    _fake_hub_cache(tmp_path / "hub", "facebook/dinov2-base",
                    {f: folder / f for f in ("config.json", "model.safetensors", "preprocessor_config.json")})
    config = config_lib.load("configs/flowers.py:dinov2-b14")
    assert config.model.init == "hf:facebook/dinov2-base"
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "tfds")
        config.data.image_size = 12  # the stored 4x4 grid becomes 3x3
        config.data.pp_train = "resize(12)|flip_lr|init_norm"
        config.data.pp_eval = "resize(12)|init_norm"
        config.data.batch_size, config.data.eval_batch_size = 4, 6
        config.total_steps, config.checkpoint_every, config.log_every = 4, 4, 1
        config.optim.warmup_steps, config.freeze, config.export_weights = 1, "linear_probe", True
    with _mock():
        runs.run(config, str(tmp_path / "run"))
    exported = tljax_format.load(str(tmp_path / "run" / "model.safetensors"))
    assert exported.arch["registers"] == 2 and exported.arch["pos_resize"] == "bicubic_antialias"
    assert exported.preprocessing["normalization"] == "normalize([0.485,0.456,0.406],[0.229,0.224,0.225])"
    stored = weights.read(str(folder))
    ours = traverse_util.flatten_dict(exported.variables["params"], sep="/")
    theirs = traverse_util.flatten_dict(stored.variables["params"], sep="/")
    resized = merge.resample_pos_embedding(theirs["embed/pos_embedding"], (1, 1 + 9, 32),
                                           "bicubic_antialias")
    np.testing.assert_array_equal(ours.pop("embed/pos_embedding"), resized)
    assert all(np.array_equal(ours[p], theirs[p]) for p in theirs if not p.startswith(("head", "embed/pos")))
    assert np.any(ours["head/kernel"] != 0)  # the probe trained its (zero-initialised) head


def _timm_state_dict(name, folder):
    """The saved HF model's weights under timm's VisionTransformer names (timm
    models/vision_transformer.py, its _convert_dinov2: a registers model's class token takes
    its position and pos_embed covers the patches only; layers/attention_pool.py: q, packed
    kv, proj), written here independently of tljax's layouts."""
    from safetensors.numpy import load_file

    sd = load_file(str(folder / "model.safetensors"))
    out = {}
    if name.startswith("dinov2"):
        p = "dinov2_with_registers." if name == "dinov2_registers" else "dinov2."
        emb, pos = f"{p}embeddings.", sd[f"{p}embeddings.position_embeddings"]
        out["cls_token"], out["pos_embed"] = sd[emb + "cls_token"], pos
        if name == "dinov2_registers":
            out["reg_token"] = sd[emb + "register_tokens"]
            out["cls_token"], out["pos_embed"] = sd[emb + "cls_token"] + pos[:, :1], pos[:, 1:]
        out["patch_embed.proj.weight"] = sd[emb + "patch_embeddings.projection.weight"]
        out["patch_embed.proj.bias"] = sd[emb + "patch_embeddings.projection.bias"]
        for i in range(TOWER["num_hidden_layers"]):
            src, dst = f"{p}encoder.layer.{i}.", f"blocks.{i}."
            for leaf in ("weight", "bias"):
                out[dst + f"attn.qkv.{leaf}"] = np.concatenate(
                    [sd[src + f"attention.attention.{w}.{leaf}"] for w in ("query", "key", "value")])
                out[dst + f"attn.proj.{leaf}"] = sd[src + f"attention.output.dense.{leaf}"]
                for n in ("norm1", "norm2"):
                    out[dst + f"{n}.{leaf}"] = sd[src + f"{n}.{leaf}"]
                swiglu = src + "mlp.weights_in.weight" in sd
                out[dst + f"mlp.fc1.{leaf}"] = sd[src + ("mlp.weights_in." if swiglu else "mlp.fc1.") + leaf]
                out[dst + f"mlp.fc2.{leaf}"] = sd[src + ("mlp.weights_out." if swiglu else "mlp.fc2.") + leaf]
            out[dst + "ls1.gamma"] = sd[src + "layer_scale1.lambda1"]
            out[dst + "ls2.gamma"] = sd[src + "layer_scale2.lambda1"]
        out["norm.weight"], out["norm.bias"] = sd[f"{p}layernorm.weight"], sd[f"{p}layernorm.bias"]
        out["head.weight"], out["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
        return out
    p = "vision_model." if name == "clip" else ""
    out["pos_embed"] = sd[f"{p}embeddings.position_embedding.weight"][None]
    out["patch_embed.proj.weight"] = sd[f"{p}embeddings.patch_embedding.weight"]
    if name == "clip":
        out["cls_token"] = sd[f"{p}embeddings.class_embedding"][None, None]
        out["norm_pre.weight"], out["norm_pre.bias"] = sd[f"{p}pre_layrnorm.weight"], sd[f"{p}pre_layrnorm.bias"]
    else:
        out["patch_embed.proj.bias"] = sd[f"{p}embeddings.patch_embedding.bias"]
        width = TOWER["hidden_size"]
        out["attn_pool.latent"] = sd[f"{p}head.probe"]
        for leaf in ("weight", "bias"):
            packed = sd[f"{p}head.attention.in_proj_{leaf}"]
            out[f"attn_pool.q.{leaf}"], out[f"attn_pool.kv.{leaf}"] = packed[:width], packed[width:]
            out[f"attn_pool.proj.{leaf}"] = sd[f"{p}head.attention.out_proj.{leaf}"]
            out[f"attn_pool.norm.{leaf}"] = sd[f"{p}head.layernorm.{leaf}"]
            out[f"attn_pool.mlp.fc1.{leaf}"] = sd[f"{p}head.mlp.fc1.{leaf}"]
            out[f"attn_pool.mlp.fc2.{leaf}"] = sd[f"{p}head.mlp.fc2.{leaf}"]
    for i in range(TOWER["num_hidden_layers"]):
        src, dst = f"{p}encoder.layers.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[dst + f"attn.qkv.{leaf}"] = np.concatenate(
                [sd[src + f"self_attn.{w}_proj.{leaf}"] for w in "qkv"])
            out[dst + f"attn.proj.{leaf}"] = sd[src + f"self_attn.out_proj.{leaf}"]
            out[dst + f"norm1.{leaf}"] = sd[src + f"layer_norm1.{leaf}"]
            out[dst + f"norm2.{leaf}"] = sd[src + f"layer_norm2.{leaf}"]
            out[dst + f"mlp.fc1.{leaf}"] = sd[src + f"mlp.fc1.{leaf}"]
            out[dst + f"mlp.fc2.{leaf}"] = sd[src + f"mlp.fc2.{leaf}"]
    out["norm.weight"], out["norm.bias"] = sd[f"{p}post_layernorm.weight"], sd[f"{p}post_layernorm.bias"]
    return out


# timm architecture names written into the hub config.json beside the weights: CLIP's
# OpenAI weights need timm's quickgelu variant; timm's SigLIP computes exact GELU, so the HF
# reference is built with hidden_act="gelu" for it.
TIMM_ARCHITECTURES = {"dinov2": "vit_base_patch14_dinov2", "dinov2_swiglu": "vit_giant_patch14_dinov2",
                      "dinov2_registers": "vit_base_patch14_reg4_dinov2",
                      "clip": "vit_base_patch16_clip_quickgelu_224", "siglip": "vit_base_patch16_siglip_224"}


@pytest.mark.parametrize("name", list(TIMM_ARCHITECTURES))
def test_timm_layouts_of_the_modern_vits_equal_hugging_face(name, tmp_path):
    from safetensors.numpy import save_file

    if name == "siglip":
        torch.manual_seed(0)
        vision = dict(TOWER, intermediate_size=64, image_size=16, hidden_act="gelu")
        reference = _randomize(transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision)))
        reference.save_pretrained(tmp_path / "hf")
    else:
        reference = _saved(name, tmp_path / "hf")
    save_file(_timm_state_dict(name, tmp_path / "hf"), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": TIMM_ARCHITECTURES[name],
        "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "input_size": [3, 16, 16]}}))
    classes = None if MODELS[name][1] == "logits" else 3
    loaded = weights.load_model(str(tmp_path / "model.safetensors"), model="vit:heads=4",
                                num_classes=classes)
    assert loaded.preprocessing == {"normalization": "normalize([0.485,0.456,0.406],[0.229,0.224,0.225])",
                                    "image_size": 16}
    assert models.pos_resize(loaded.module) == "bicubic_antialias"  # timm resample_abs_pos_embed
    images = square_images(16)
    error = relative_error(_ours(name, loaded, images), _reference(name, reference, images))
    assert error <= 1e-4, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("architecture,size", [("vit_small_patch14_reg4_dinov2", 28),
                                               ("vit_base_patch16_siglip_224", 32),
                                               ("vit_base_patch16_clip_quickgelu_224", 32)])
def test_timm_models_themselves(architecture, size, tmp_path):
    """Against timm's own modules, two blocks deep; runs where timm imports (the GPU
    machine; timm does not import on the CPU CI machines)."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = _randomize(timm.create_model(architecture, pretrained=False, img_size=size, depth=2,
                                         num_classes=5))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": architecture}))
    loaded = weights.load_model(str(tmp_path / "model.safetensors"))
    images = square_images(size)
    with torch.no_grad():
        expected = model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    assert relative_error(_ours("dinov2", loaded, images), expected) <= 1e-4


def test_a_partial_or_foreign_checkpoint_is_one_error_naming_the_keys(tmp_path):
    from safetensors.numpy import load_file, save_file

    from tljax.errors import UserError

    _saved("dinov2_registers", tmp_path)
    arrays = load_file(str(tmp_path / "model.safetensors"))
    arrays.pop("dinov2_with_registers.encoder.layer.1.layer_scale2.lambda1")
    arrays["dinov2_with_registers.encoder.layer.1.extra.weight"] = np.zeros(3, np.float32)
    save_file(arrays, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match=r"missing keys \['dinov2_with_registers.encoder.layer.1."
                                        r"layer_scale2.lambda1'\]; unexpected keys \['dinov2_with_"
                                        r"registers.encoder.layer.1.extra.weight'\]"):
        weights.load_model(str(tmp_path))


def test_exports_made_before_the_activation_option_still_build():
    """Exports and model.json written before 2026-11-27 record `gelu_approximate`."""
    arch = {"size": "Ti", "width": 16, "depth": 1, "mlp_dim": 32, "heads": 2, "patch": 4}
    assert models.build("vit", {**arch, "gelu_approximate": True}, 3).activation == "gelu_tanh"
    assert models.build("vit", {**arch, "gelu_approximate": False}, 3).activation == "gelu"


@pytest.mark.parametrize("config,expected", [
    # openai/clip-vit-*: older int sizes, short side then crop
    ({"size": 224, "crop_size": 224, "do_center_crop": True}, (224, "resize_small(224)|central_crop(224)")),
    # facebook/convnext-*-224: 224/crop_pct then crop; at 384 and above HF warps, no crop
    ({"size": 224, "crop_pct": 0.875}, (224, "resize_small(256)|central_crop(224)")),
    ({"size": {"shortest_edge": 384}, "crop_pct": 0.875}, (384, "resize(384)")),
    # google/vit-*: an int size without crop is the square's side
    ({"size": 224, "do_center_crop": False}, (224, "resize(224)")),
    ({"size": {"height": 224, "width": 224}}, (224, "resize(224)")),
])
def test_hf_preprocessor_configs_old_and_new(config, expected, tmp_path):
    from tljax.formats.convert import hf_preprocessing

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {**config, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    pp = hf_preprocessing(str(tmp_path), "none", 99)
    assert (pp["image_size"], pp["pp_eval"]) == (expected[0], expected[1] + "|value_range(-1,1)")


def test_vpt_prompts_go_after_the_class_token_and_registers_and_leave_the_features():
    """With registers, prompts enter after [class, registers] and leave before the final norm;
    the pooled features (token_gap head input, probes' block pooling, DINOv2's linear input)
    average the patch tokens only."""
    from tljax import freezing
    from tljax.models import peft, vit

    arch = {"size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4,
            "registers": 2, "layer_scale": True, "classifier": "token_gap"}
    module = models.build("vit", arch, 3)
    variables = weights.init_variables(module, (16, 16, 3))
    prompted, pvars = peft.add(module, variables, freezing.parse("vpt:tokens=3,deep=1").peft,
                               models.example_input(module, (16, 16, 3)))
    images = square_images(16)
    _, state = prompted.apply(pvars, images, capture_intermediates=True, mutable=[names.INTERMEDIATES])
    flat = traverse_util.flatten_dict(state[names.INTERMEDIATES])
    block = flat[("encoder", "block1", "__call__")][0]
    assert block.shape[1] == 1 + 2 + 3 + 16  # class, registers, prompts, patches
    final = flat[("encoder", "__call__")][0]
    assert final.shape[1] == 1 + 2 + 16
    np.testing.assert_allclose(flat[(names.HEAD_INPUT,)][0],
                               np.concatenate([final[:, 0], final[:, 3:].mean(1)], -1), rtol=1e-6)
    pooled = vit.FAMILY.pool(prompted, block)
    np.testing.assert_allclose(pooled, np.concatenate([block[:, 0], block[:, 6:].mean(1)], -1), rtol=1e-6)

"""Hugging Face GPT-2 folders -> models/gpt2.py: the architecture from config.json, the keys of
GPT2ForSequenceClassification (`transformer.` + `score`) and of the bare GPT2Model and
GPT2LMHeadModel (a new classifier; the tied LM head is left unread). GPT-2 stores its linear
layers as Conv1D, (in, out): no transpose, and the packed query/key/value split in three.
"""
from tljax.errors import UserError
from tljax.formats import convert, source

# Buffers of older checkpoints (the causal mask) and the LM head (tied to the embeddings).
_UNREAD = (".attn.bias", ".attn.masked_bias", "lm_head.")


def _arch(cfg, folder):
    for flag in ("scale_attn_by_inverse_layer_idx",):
        if cfg.get(flag):
            raise UserError(f"{folder}: GPT-2 with {flag}=true is not supported")
    width = cfg["n_embd"]
    act = {"hidden_act": cfg.get("activation_function", "gelu_new")}
    return dict(vocab_size=cfg["vocab_size"], width=width, depth=cfg["n_layer"],
                heads=cfg["n_head"], mlp_dim=cfg.get("n_inner") or 4 * width,
                max_positions=cfg["n_positions"], ln_eps=cfg.get("layer_norm_epsilon", 1e-5),
                activation=convert.activation_of(act, folder))


def _layout(prefix, heads):
    def layout(path):
        parts = convert.torch_parameter(path)
        if parts is None:
            return None
        module, leaf, torch_leaf = parts
        if module == "head":
            return "score.weight", "dense"
        if module in ("embed/word", "embed/position"):
            return f"{prefix}{'wte' if module == 'embed/word' else 'wpe'}.weight", "id"
        if module == "norm":
            return f"{prefix}ln_f.{torch_leaf}", "id"
        m2 = convert.match(r"block(\d+)/(norm1|norm2|attn/(query|key|value|out)|mlp/(fc1|fc2))", module)
        if not m2:
            return None
        stem = f"{prefix}h.{m2[1]}."
        if m2[2] in ("norm1", "norm2"):
            return f"{stem}ln_{m2[2][-1]}.{torch_leaf}", "id"
        if m2[4]:
            return f"{stem}mlp.{'c_fc' if m2[4] == 'fc1' else 'c_proj'}.{torch_leaf}", "id"
        if m2[3] == "out":
            return f"{stem}attn.c_proj.{torch_leaf}", (f"conv1d_out_kernel:{heads}" if leaf == "kernel" else "id")
        index = ("query", "key", "value").index(m2[3])
        if leaf == "kernel":
            return f"{stem}attn.c_attn.weight", f"conv1d_qkv_kernel:{index}:{heads}"
        return f"{stem}attn.c_attn.bias", f"qkv_bias:{index}:{heads}"

    return layout


def from_hf(folder, cfg, raw, path):
    arch = _arch(cfg, folder)
    prefix = convert.prefix_of(raw, "transformer.")
    classes = raw["score.weight"].shape[0] if "score.weight" in raw else 0
    arrays = source.Arrays(raw, path, ignore=_UNREAD + (() if classes else ("score.",)))
    pad = cfg.get("pad_token_id")  # GPT-2 has none: its end-of-text token pads (masked anyway)
    preprocessing = convert.hf_text_preprocessing(
        folder, arch["max_positions"], pad if pad is not None else cfg.get("eos_token_id", 0))
    return convert.Detected("gpt2", arch, classes, preprocessing, arrays, _layout(prefix, arch["heads"]))


LAYOUT = convert.Layout(HF_MODEL_TYPES=("gpt2",), from_hf=from_hf)

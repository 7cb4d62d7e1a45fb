"""Hugging Face BERT, RoBERTa and DistilBERT folders -> models/bert.py: the architecture from
config.json, the key layout of the *ForSequenceClassification classes and of the bare
backbones (BertModel, RobertaModel, DistilBertModel, and pretraining checkpoints such as
bert-base-uncased's, whose MLM/NSP heads are left unread: the classifier is new).
"""
from tljax.errors import UserError
from tljax.formats import convert, source

# HF config.json model_type -> (key prefix of the task classes, classifier, positions)
_TYPES = {"bert": ("bert.", "pooler", "absolute"),
          "roberta": ("roberta.", "tanh", "after_padding"),
          "distilbert": ("distilbert.", "relu", "absolute")}
# Keys of pretraining heads and buffers no classifier reads.
_UNREAD = ("cls.", "lm_head.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
           "position_ids", "token_type_ids")
# DistilBERT's LayerNorms are built with eps=1e-12 whatever its config says
# (transformers models/distilbert/modeling_distilbert.py Embeddings and TransformerBlock).
DISTILBERT_LN_EPS = 1e-12


def _modern(key):
    """Old BERT checkpoints name LayerNorm parameters gamma/beta (HF renames them on load)."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _arch(cfg, model_type, folder):
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{folder}: position_embedding_type {cfg['position_embedding_type']!r} "
                        f"is not supported (absolute only)")
    _, classifier, positions = _TYPES[model_type]
    if model_type == "distilbert":
        dims = dict(width=cfg["dim"], depth=cfg["n_layers"], heads=cfg["n_heads"],
                    mlp_dim=cfg["hidden_dim"], type_vocab_size=0, ln_eps=DISTILBERT_LN_EPS,
                    activation=convert.activation_of({"hidden_act": cfg.get("activation", "gelu")},
                                                     folder))
    else:
        dims = dict(width=cfg["hidden_size"], depth=cfg["num_hidden_layers"],
                    heads=cfg["num_attention_heads"], mlp_dim=cfg["intermediate_size"],
                    type_vocab_size=cfg.get("type_vocab_size", 2),
                    ln_eps=cfg.get("layer_norm_eps", 1e-12),
                    activation=convert.activation_of(cfg, folder))
    return dict(dims, vocab_size=cfg["vocab_size"], max_positions=cfg["max_position_embeddings"],
                positions=positions, pad_id=cfg.get("pad_token_id") or 0, classifier=classifier)


def max_length(arch):
    """The longest input the position table covers: RoBERTa's ids start after pad_id."""
    if arch["positions"] == "after_padding":
        return arch["max_positions"] - arch["pad_id"] - 1
    return arch["max_positions"]


def _layer_key(model_type, i, part):
    """The HF key stem of `part` of layer i."""
    if model_type == "distilbert":
        names = {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
                 "out": "attention.out_lin", "attn_norm": "sa_layer_norm", "fc1": "ffn.lin1",
                 "fc2": "ffn.lin2", "mlp_norm": "output_layer_norm"}
        return f"transformer.layer.{i}.{names[part]}"
    names = {"query": "attention.self.query", "key": "attention.self.key",
             "value": "attention.self.value", "out": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense",
             "fc2": "output.dense", "mlp_norm": "output.LayerNorm"}
    return f"encoder.layer.{i}.{names[part]}"


def _layout(model_type, prefix, heads):
    """tljax path -> (HF key, transform)."""
    head_keys = {"pooler": {"head": "classifier"},
                 "tanh": {"head/dense": "classifier.dense", "head/out": "classifier.out_proj"},
                 "relu": {"head/dense": "pre_classifier", "head/out": "classifier"}}[_TYPES[model_type][1]]

    def layout(path):
        parts = convert.torch_parameter(path)
        if parts is None:
            return None
        module, leaf, torch_leaf = parts
        if module in head_keys:  # the classifier is outside the backbone's prefix
            return f"{head_keys[module]}.{torch_leaf}", "dense" if leaf == "kernel" else "id"
        if module == "pooler":
            return f"{prefix}pooler.dense.{torch_leaf}", "dense" if leaf == "kernel" else "id"
        if m2 := convert.match(r"embed/(word|position|token_type|norm)", module):
            stem = {"word": "word_embeddings", "position": "position_embeddings",
                    "token_type": "token_type_embeddings", "norm": "LayerNorm"}[m2[1]]
            return f"{prefix}embeddings.{stem}.{torch_leaf}", "id"
        m2 = convert.match(r"layer(\d+)/(?:attn/(query|key|value|out)|(attn_norm|mlp_norm)|mlp/(fc1|fc2))",
                           module)
        if not m2:
            return None
        i, attn, norm, mlp = int(m2[1]), m2[2], m2[3], m2[4]
        key = f"{prefix}{_layer_key(model_type, i, attn or norm or mlp)}.{torch_leaf}"
        if attn in ("query", "key", "value"):
            return key, (f"heads_kernel:{heads}" if leaf == "kernel" else f"heads_bias:{heads}")
        if attn == "out":
            return key, (f"out_kernel:{heads}" if leaf == "kernel" else "id")
        return key, "dense" if leaf == "kernel" else "id"

    return layout


def _num_classes(raw, model_type):
    key = {"bert": "classifier.weight", "roberta": "classifier.out_proj.weight",
           "distilbert": "classifier.weight"}[model_type]
    return raw[key].shape[0] if key in raw else 0


def from_hf(folder, cfg, raw, path):
    model_type = cfg["model_type"]
    raw = {_modern(k): v for k, v in raw.items()}
    arch = _arch(cfg, model_type, folder)
    prefix = convert.prefix_of(raw, _TYPES[model_type][0])
    classes = _num_classes(raw, model_type)
    unread = _UNREAD + (() if arch["classifier"] == "pooler" else (f"{prefix}pooler.",))
    if not classes:  # a backbone: a task head the file holds for another task stays unread
        unread += ("classifier.", "pre_classifier.")
    arrays = source.Arrays(raw, path, ignore=unread)
    preprocessing = convert.hf_text_preprocessing(folder, max_length(arch), arch["pad_id"])
    return convert.Detected("bert", arch, classes, preprocessing, arrays,
                            _layout(model_type, prefix, arch["heads"]))


LAYOUT = convert.Layout(HF_MODEL_TYPES=tuple(_TYPES), from_hf=from_hf)

"""BERT, RoBERTa, DistilBERT and GPT-2 loaded from Hugging Face folders: logits equal to HF
transformers' *ForSequenceClassification on right-padded batches of different lengths, with
every parameter randomised (LayerNorms and biases too); a BERT sentence pair; a RoBERTa whose
pad id is not 1 (its position ids start after it); a LayerNorm epsilon read from config.json
where it matters; bare backbones (BertModel, GPT2LMHeadModel) under a new head; padding that
never changes a prediction.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import traverse_util  # noqa: E402

from tljax import models, weights  # noqa: E402
from tljax.models import names  # noqa: E402

from tests.helpers import relative_error  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

VOCAB = 97
LENGTHS = (9, 4, 6)  # a right-padded batch: texts of different lengths
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=40, num_labels=3)


def _bert(**kw):
    return transformers.BertForSequenceClassification(transformers.BertConfig(**{**SMALL, **kw}))


def _roberta(**kw):  # pad id 3, not RoBERTa's usual 1: positions start at 4
    cfg = transformers.RobertaConfig(**{**SMALL, "pad_token_id": 3, "type_vocab_size": 1, **kw})
    return transformers.RobertaForSequenceClassification(cfg)


def _distilbert(**kw):
    cfg = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4,
                                        hidden_dim=48, max_position_embeddings=40, num_labels=3,
                                        **kw)
    return transformers.DistilBertForSequenceClassification(cfg)


def _gpt2(**kw):
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                  n_positions=40, num_labels=3, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=1, **kw)
    return transformers.GPT2ForSequenceClassification(cfg)


MAKERS = {"bert": _bert, "roberta": _roberta, "distilbert": _distilbert, "gpt2": _gpt2}


def _randomize(model, seed=0):
    """Every parameter drawn anew: norms' scales around 1, everything else N(0, 0.3²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            noise = torch.randn(tensor.shape, generator=gen)
            is_norm_scale = tensor.ndim == 1 and ("norm" in name.lower() or ".ln_" in name) \
                and name.endswith("weight")
            tensor.copy_(1.0 + 0.2 * noise if is_norm_scale else 0.3 * noise)
    return model.eval()


def _batch(pad_id, lengths=LENGTHS, seed=0):
    """Token ids (never the pad id) right-padded with `pad_id`, and their attention mask."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.choice([t for t in range(4, VOCAB)], n)
        mask[row, :n] = 1
    return ids, mask


def _saved(model, tmp_path, name="hf"):
    folder = tmp_path / name
    model.save_pretrained(folder)
    return str(folder)


def _hf_logits(model, ids, mask, **kw):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     **{k: torch.tensor(v) for k, v in kw.items()}).logits.numpy()


def _ours(loaded, ids, mask, **kw):
    return np.asarray(loaded.module.apply(loaded.variables, jnp.asarray(ids, jnp.int32),
                                          attention_mask=jnp.asarray(mask, jnp.int32),
                                          train=False, **{k: jnp.asarray(v, jnp.int32) for k, v in kw.items()}))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_logits_equal_hf_on_a_padded_batch(kind, tmp_path):
    model = _randomize(MAKERS[kind]())
    loaded = weights.load_model(_saved(model, tmp_path))
    ids, mask = _batch(model.config.pad_token_id or 0)
    expected = _hf_logits(model, ids, mask)
    got = _ours(loaded, ids, mask)
    assert relative_error(got, expected) < 1e-4, (kind, got, expected)
    assert np.abs(expected).max() > 0.1  # a random model, not a zero head
    # Padding never changes a prediction: each text alone gives its row of the batch.
    for row, n in enumerate(LENGTHS):
        alone = _ours(loaded, ids[row:row + 1, :n], mask[row:row + 1, :n])
        assert relative_error(alone[0], got[row]) < 1e-5, (kind, row)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_sentence_pairs_read_token_types(kind, tmp_path):
    """BERT's token type embeddings; GPT-2 embeds token types with its word table (HF)."""
    model = _randomize(MAKERS[kind]())
    loaded = weights.load_model(_saved(model, tmp_path))
    ids, mask = _batch(0)
    types = np.zeros_like(ids)
    types[:, 3:] = mask[:, 3:]  # the second sentence from position 3
    expected = _hf_logits(model, ids, mask, token_type_ids=types)
    assert relative_error(_ours(loaded, ids, mask, token_type_ids=types), expected) < 1e-4
    # The token types matter: without them the logits differ.
    assert relative_error(_ours(loaded, ids, mask), expected) > 1e-3


def test_roberta_positions_start_after_its_pad_id(tmp_path):
    """pad_token_id=3: the position of the first token is 4 (HF create_position_ids_from_input_ids),
    and the longest text the table holds is max_position_embeddings - 4."""
    loaded = weights.load_model(_saved(_randomize(_roberta()), tmp_path))
    assert loaded.module.pad_id == 3 and loaded.module.positions == "after_padding"
    assert loaded.preprocessing["max_length"] == 40 - 3 - 1


def test_layernorm_epsilon_comes_from_config(tmp_path):
    """Embeddings scaled down until their variance is near the config's layer_norm_eps (1e-7,
    not BERT's default 1e-12): parity holds, and the default epsilon would break it."""
    model = _randomize(_bert(layer_norm_eps=1e-7))
    with torch.no_grad():
        for table in (model.bert.embeddings.word_embeddings, model.bert.embeddings.position_embeddings,
                      model.bert.embeddings.token_type_embeddings):
            table.weight.mul_(1e-3)
    loaded = weights.load_model(_saved(model, tmp_path))
    assert loaded.module.ln_eps == 1e-7
    ids, mask = _batch(0)
    expected = _hf_logits(model, ids, mask)
    assert relative_error(_ours(loaded, ids, mask), expected) < 1e-4
    wrong = loaded._replace(module=loaded.module.clone(ln_eps=1e-12))
    assert relative_error(_ours(wrong, ids, mask), expected) > 1e-2


def test_gpt2_activation_comes_from_config(tmp_path):
    """activation_function "gelu" (exact) instead of GPT-2's "gelu_new" (tanh)."""
    model = _randomize(_gpt2(activation_function="gelu"))
    loaded = weights.load_model(_saved(model, tmp_path))
    assert loaded.module.activation == "gelu"
    ids, mask = _batch(0)
    assert relative_error(_ours(loaded, ids, mask), _hf_logits(model, ids, mask)) < 1e-4


def _head_input(loaded, ids, mask):
    _, state = loaded.module.apply(loaded.variables, jnp.asarray(ids, jnp.int32),
                                   attention_mask=jnp.asarray(mask, jnp.int32),
                                   mutable=[names.INTERMEDIATES])
    return np.asarray(state[names.INTERMEDIATES][names.HEAD_INPUT][0])


def test_bare_bert_backbone_gets_a_new_head(tmp_path):
    """A BertModel folder (no classifier): load_model needs num_classes, the head starts as
    HF draws it (normal(0.02)), and what it reads is HF's pooler_output."""
    bare = _randomize(transformers.BertModel(transformers.BertConfig(**SMALL)))
    folder = _saved(bare, tmp_path)
    with pytest.raises(Exception, match="num_classes"):
        weights.load_model(folder)
    loaded = weights.load_model(folder, num_classes=4)
    ids, mask = _batch(0)
    with torch.no_grad():
        pooled = bare(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).pooler_output.numpy()
    assert relative_error(_head_input(loaded, ids, mask), pooled) < 1e-4
    assert 0.01 < float(np.std(loaded.variables["params"][names.HEAD]["kernel"])) < 0.03


def test_gpt2_lm_checkpoint_gets_a_new_head(tmp_path):
    """A GPT2LMHeadModel folder (the tied LM head unread): the new head reads HF's final
    hidden state at each text's last token."""
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=40,
                                  bos_token_id=1, eos_token_id=1)
    lm = _randomize(transformers.GPT2LMHeadModel(cfg))
    loaded = weights.load_model(_saved(lm, tmp_path), num_classes=2)
    ids, mask = _batch(0)
    with torch.no_grad():
        hidden = lm.transformer(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))[0].numpy()
    last = np.array(LENGTHS) - 1
    assert relative_error(_head_input(loaded, ids, mask), hidden[np.arange(len(LENGTHS)), last]) < 1e-4


@pytest.mark.parametrize("kind", ["roberta", "distilbert"])
def test_two_layer_heads_reset_to_a_trainable_start(kind, tmp_path):
    """A new RoBERTa/DistilBERT head: both layers drawn as HF draws them (normal(0.02)), so
    the output layer has a gradient at the first step. A zero hidden layer (what a reset
    to zero would give) leaves it none: tanh(0) = 0, ReLU(0) = 0."""
    loaded = weights.load_model(_saved(_randomize(MAKERS[kind]()), tmp_path), num_classes=5)
    head = loaded.variables["params"][names.HEAD]
    for layer in ("dense", "out"):
        assert 0.01 < float(np.std(head[layer]["kernel"])) < 0.03
    ids, mask = _batch(loaded.module.pad_id)

    def out_kernel_grad(params):
        def loss(params):
            logits = loaded.module.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                         attention_mask=jnp.asarray(mask, jnp.int32))
            return -jax.nn.log_softmax(logits)[:, 0].mean()
        return np.asarray(jax.grad(loss)(params)[names.HEAD]["out"]["kernel"])

    assert np.abs(out_kernel_grad(loaded.variables["params"])).max() > 1e-4
    zeroed = jax.tree.map(lambda x: x, loaded.variables["params"])
    zeroed[names.HEAD] = dict(head, dense={"kernel": np.zeros_like(head["dense"]["kernel"]),
                                           "bias": np.zeros_like(head["dense"]["bias"])})
    assert not np.any(out_kernel_grad(zeroed))


@pytest.mark.parametrize("kind,groups", [
    ("bert", ["embed", "layer0", "layer1", "pooler", "head"]),
    ("roberta", ["embed", "layer0", "layer1", "head"]),
    ("gpt2", ["embed", "block0", "block1", "norm", "head"])])
def test_groups_cover_every_parameter_in_depth_order(kind, groups, tmp_path):
    loaded = weights.load_model(_saved(_randomize(MAKERS[kind]()), tmp_path))
    group_list = models.groups(loaded.module)
    assert [name for name, _ in group_list] == groups
    for path in traverse_util.flatten_dict(loaded.variables["params"], sep="/"):
        models.group_of(path, group_list)  # raises for an uncovered parameter
    # The pooler and GPT-2's final norm belong to the top depth unit (last_k:1 trains them).
    top = {"bert": ["layer1", "pooler"], "roberta": ["layer1"], "gpt2": ["block1", "norm"]}[kind]
    assert models.depth_groups(group_list)[-1] == top


TINY = {"bert": dict(vocab_size=VOCAB, width=32, depth=3, heads=4, mlp_dim=64, max_positions=40),
        "gpt2": dict(vocab_size=VOCAB, width=32, depth=3, heads=4, mlp_dim=64, max_positions=40)}


@pytest.mark.parametrize("family", sorted(TINY))
def test_frozen_text_layers_cost_no_backward_pass(family):
    """XLA's compiled FLOPs of one train step: a linear probe costs about a forward pass,
    and each unfrozen layer adds its backward pass (as for the vision families,
    tests/test_freeze.py); BitFit trains every bias but takes no weight gradients."""
    from tests.test_freeze import _cost, _optim_cfg
    from tljax import freezing
    from tljax.training import optim, steps
    from tljax.training import state as state_lib

    module = models.build(family, TINY[family], 3)
    variables = weights.init_variables(module, (16,))
    batch = {"input_ids": jnp.ones((8, 16), jnp.int32), "attention_mask": jnp.ones((8, 16), jnp.int32),
             "label": jnp.zeros((8,), jnp.int32)}
    forward = _cost(lambda v, b: module.apply(v, b["input_ids"], attention_mask=b["attention_mask"]),
                    variables, batch)
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    flops = {}
    for spec in ["linear_probe", "last_k:1", "last_k:2", "bitfit", "full"]:
        plan = freezing.make_plan(spec, models.groups(module), paths, 100)
        tx = optim.build(_optim_cfg(), plan, 0, 100)
        state = state_lib.create(variables, tx, plan.phases[0].trainable_paths(), seed=0)
        flops[spec] = _cost(steps.make_train_step(module, tx, plan.phases[0].trainable_paths()),
                            state, batch)
    assert flops["linear_probe"] <= 1.10 * forward, (flops, forward)
    order = ["linear_probe", "last_k:1", "last_k:2", "full"]
    assert all(flops[a] < flops[b] for a, b in zip(order, order[1:])), flops
    assert flops["bitfit"] < 0.8 * flops["full"], flops

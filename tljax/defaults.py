"""Every config key a user may set, declared once in KEYS: its dotted name, default, one-line
doc and the check its values must pass (the kinds of check: tljax/config_keys.py). `base()`
builds the config from KEYS (config files start from it, via configs/common.py, and override;
the locked ConfigDict rejects typos) and config_lib.validate runs the checks, then
CROSS_CHECKS, the few that read several keys. Adding a key: one row here, and the code that
uses it. Checks that need the data, the model or the devices stay where those are known.
"""
from tljax.config_keys import (Check, CrossCheck, Key, at_least, build, check_table,
                               finite_at_least, in_range, of_type, one_of, whole,
                               whole_numbers)

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
PROBE_METHODS = ("ridge", "logreg", "knn")
OPTIMIZERS = ("sgd", "adam", "adamw")  # training/optim.py builds each
SCHEDULES = ("cosine", "linear", "steps", "constant")
_RATE = in_range(0, 1, high_open=True)  # a train-time regulariser's rate


def _is_phases(phases):
    return isinstance(phases, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int)
        and isinstance(p[1], (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == 2
                                                    for r in p[1]) for p in phases)


def _is_l2sp(value):
    value = tuple(value)
    return value == () or (len(value) == 2 and all(
        isinstance(v, (int, float)) and v >= 0 for v in value))


KEYS = (
    Key("seed", 0, "the run seed"),
    Key("parallelism", "jit", '"jit" (SPMD over a Mesh), "fsdp" (jit + sharded params/opt '
        'state), or "pmap" (per-device replicas, one process)'),
    Key("accum_steps", 1, "gradient accumulation: microbatches per optimizer step", whole(1)),
    Key("accum_bn_microbatch_stats", False, "allow accum_steps > 1 while BatchNorm trains (each "
        "microbatch then normalises with its own statistics)"),
    Key("total_steps", 500, "optimizer steps, the length of the lr schedule", whole(1)),
    # Its range, 0..total_steps, is in CROSS_CHECKS.
    Key("stop_at_step", 0, "> 0: stop after this step, with a validation and a checkpoint there; "
        "the schedule stays total_steps long and a later start with a larger value (or 0) "
        "resumes it (tljax/experiments/search.py's rungs)"),
    Key("log_every", 50, "steps between progress lines + metrics.jsonl train records", whole(1)),
    Key("eval_every", 100, "steps between validations; 0: only at the end",
        whole(0, " (0: only at the end)")),
    Key("checkpoint_every", 100, "steps between checkpoints", whole(1)),
    Key("keep_checkpoints", 2, "checkpoints kept in the workdir", whole(1)),
    Key("export_weights", True, "at the end: workdir/model.safetensors (final weights) and, with "
        "a validation split, best.safetensors (selected weights)"),
    Key("compilation_cache", "auto", 'XLA executables kept across runs: "auto" '
        '($TLJAX_COMPILATION_CACHE, else ~/.cache/tljax/xla), a folder, or "off"'),
    Key("hyperrule", False, "BiT-HyperRule: resolution, schedule, lr and mixup from the data"),
    Key("freeze", "full", 'freezing strategy string, e.g. "lp_ft:lp_steps=100"',
        of_type(str, "a strategy string (explicit phases go in config.freeze_phases)")),
    Key("freeze_phases", (), "explicit phases, used instead of freeze when set: "
        "((start_step, ((regex, lr_mult or None), ...)), ...)",
        Check(_is_phases, "((start_step, ((regex, lr_mult or None), ...)), ...)")),

    Key("model.name", "bit", "the model family (tljax/models)"),
    Key("model.arch", {"block_counts": (3, 4, 6, 3), "width_factor": 1},
        "the family's architecture options; empty: from the model.init weights"),
    Key("model.num_classes", -1, "-1: from the dataset",
        Check(lambda v: v == -1 or v >= 1, "-1 (from the data) or >= 1")),
    Key("model.dtype", "float32", "activations and matmuls; parameters and optimizer state stay "
        "float32", one_of(FLOAT_DTYPES)),
    Key("model.forward_param_dtype", "", '"bfloat16": parameters cast once per step for the '
        'forward pass (float32 master copy and gradients; docs/scale.md)',
        one_of(("",) + FLOAT_DTYPES)),
    Key("model.attention", "auto", "ViT attention kernel: auto | xla | cudnn "
        "(tljax/models/attention.py, which checks it)"),
    Key("model.init", "", 'weights source (see tljax.weights.load_model); "" = from scratch'),
    Key("model.init_head", "reset", '"reset": zero head; "keep": load the head too',
        one_of(("reset", "keep"))),
    Key("model.keep_pre_logits", False, "ViT i21k pre_logits layer: dropped with a new head, as "
        "vit_jax does when fine-tuning"),
    # The three regularisers are train-time only; a family that lacks one refuses it
    # (run_init.with_regularisation).
    Key("model.dropout", 0.0, "ViT embeddings/attention output/MLP + head input (vit_jax "
        "placement); BiT/ResNet head input", _RATE),
    Key("model.attention_dropout", 0.0, "ViT attention probabilities", _RATE),
    Key("model.drop_path", 0.0, "stochastic depth, linear over residual blocks: 0 first, this "
        "last (timm's rule), ViT blocks and BiT/ResNet units", _RATE),
    Key("model.peft", "", "parameter-efficient modules to add beyond those config.freeze names, "
        'e.g. "lora:r=8" for explicit freeze_phases to train',
        of_type(str, "a string of parameter-efficient methods such as 'lora:r=8'")),
    Key("model.init_recipe", "", 'config "path:arg" that produces model.init when it is missing'),
    Key("model.check_preprocessing", True, "pp must normalise as the weights expect"),

    Key("data.name", "tljax_digits", 'a TFDS name, or "folder:/path" for a folder of images '
        "(see tljax/data/folder.py for the layouts)"),
    Key("data.folder_fractions", (0.8, 0.1, 0.1), "a one-tree image folder's "
        "train/validation/test fractions"),
    Key("data.folder_split_seed", 0, "fixed across run seeds: every seed sees the same test "
        "images"),
    Key("data.data_dir", "", '"" = TFDS default (~/tensorflow_datasets)'),
    Key("data.manual_dir", "", "manually downloaded files, for datasets TFDS cannot download"),
    Key("data.train_split", "train", "the split trained on"),
    Key("data.val_split", "", 'selection split (best step, best lr); "" = none: the final step is '
        "reported. Never the test split."),
    Key("data.test_split", "test", "evaluated once, at the end (final and validation-selected "
        "step)"),
    Key("data.few_shot_k", 0, ">0: k examples per class of train_split"),
    Key("data.few_shot_val_k", 0, "validation examples per class when val_split is the train "
        "split"),
    Key("data.few_shot_seed", -1, "<0: the run seed"),
    Key("data.image_size", 224, "the model's input resolution; {size} in pp strings stands for "
        "it", whole(1)),
    Key("data.pp_train", "inception_crop({size})|flip_lr|value_range(-1,1)",
        "train preprocessing ops"),
    Key("data.pp_eval", "resize({size})|value_range(-1,1)", "evaluation preprocessing ops"),
    # Text (data.name "text:/path" or a TFDS text dataset; tljax/data/text.py, tokens.py).
    Key("data.tokenizer", "", 'a tokenizer.json or a folder holding one; "" = the model.init '
        "folder's (the checkpoint's own tokenizer)"),
    Key("data.max_length", 128, "texts longer than this many tokens are truncated; batches are "
        "padded to length buckets up to it", whole(1)),
    Key("data.pad_id", -1, "the token id padding fills; -1 = the model's (its config.json "
        "pad_token_id), else the tokenizer's [PAD]/<pad>, else 0"),
    Key("data.batch_size", 512, "global train batch", whole(1)),
    Key("data.eval_batch_size", 512, "global evaluation batch", whole(1)),
    Key("data.shuffle_buffer", 10_000, "train examples shuffled at once"),
    Key("data.cache", False, "cache the dataset in memory (tf.data cache)"),
    # Mixup and CutMix pair example i with B-1-i of the global batch, in the train step.
    Key("data.mixup_alpha", 0.0, ">0: mixup with Beta(alpha, alpha) per batch",
        at_least(0, " (0 = off)")),
    Key("data.cutmix_alpha", 0.0, ">0: CutMix (box side sqrt(1 - lam), lam ~ Beta(alpha, alpha))",
        at_least(0, " (0 = off)")),
    Key("data.mix_prob", 1.0, "probability that a batch is mixed at all (timm Mixup `prob`)",
        in_range(0, 1)),
    Key("data.mix_switch_prob", 0.5, "with both alphas: probability of CutMix over mixup (timm)",
        in_range(0, 1)),

    Key("label_smoothing", 0.0, "targets (1 - e) one_hot + e / K (also on mixed labels)",
        in_range(0, 1, high_open=True)),
    # ema: exponential moving average of the parameters that train and of the BatchNorm
    # statistics (timm ModelEmaV2 averages buffers too).
    Key("ema.decay", 0.0, "> 0: kept in the train state, evaluated next to the raw weights",
        in_range(0, 1, high_open=True, note=" (0 = off)")),
    Key("ema.warmup", False, "decay min(decay, (1 + step) / (10 + step)) (TF num_updates)"),
    Key("ema.export", False, "also write workdir/ema.safetensors at the end"),

    # probe: the pretrained model as a fixed feature extractor (tljax/probe/features.py).
    # A probe also needs data.val_split (CROSS_CHECKS).
    Key("probe.method", "", '"ridge" | "logreg" | "knn": fit this on cached pre-logits features '
        'instead of training ("" = train as configured)', one_of(("",) + PROBE_METHODS)),
    Key("probe.groups", (), 'also the pooled outputs of these depth groups, e.g. ("block10", '
        "\"block11\"): a ViT's class token + mean patch token, a ResNet stage's mean (for "
        "DINOv2's own input see n_last_blocks)"),
    Key("probe.pre_logits", True, "the head's input (what the head of a fine-tuned model sees)"),
    Key("probe.n_last_blocks", 0, "> 0 (ViT): DINOv2's linear input instead: the class tokens of "
        "the last n blocks through the final norm (dinov2 eval/linear.py)"),
    Key("probe.avgpool", False, "with n_last_blocks: also the last block's mean patch token"),
    Key("probe.l2_regs", tuple(2.0**k for k in range(-4, 15, 2)), "ridge: chosen on validation"),
    Key("probe.shots", (1, 5, 10, 25), "ridge few-shot table (big_vision common_fewshot.py)",
        whole_numbers(1)),
    Key("probe.few_shot_l2", 2.0**10, "its fixed l2 (big_vision common_fewshot.py: l2_reg = "
        "2**10)"),
    Key("probe.few_shot_seeds", 3, "few-shot draws per shot count"),
    Key("probe.lrs", (0.001, 0.003, 0.01, 0.03, 0.1), "logreg: heads trained at once, lr x wd, "
        "the best on validation reported"),
    Key("probe.wds", (0.0, 1e-4, 1e-3, 1e-2), "logreg: weight decays (see probe.lrs)"),
    Key("probe.epochs", 100, "logreg: epochs"),
    Key("probe.batch_size", 256, "logreg: batch size"),
    Key("probe.knn_ks", (1, 5, 10, 20), "k-NN: k chosen on validation (DINO eval_knn.py: 20)",
        whole_numbers(1)),
    Key("probe.refit", False, "then refit on train + validation at the chosen value before test "
        "(VTAB's train800val200; DINOv2 eval/log_regression.py)"),

    # fewshot: few-shot monitoring during fine-tuning (tljax/probe/monitor.py).
    Key("fewshot.name", "", "dataset whose ridge few-shot accuracy is logged at every "
        "evaluation"),
    Key("fewshot.train_split", "train", "its split the few-shot examples come from"),
    Key("fewshot.test_split", "test", "its split the accuracy is measured on"),
    Key("fewshot.shots", (1, 5), "examples per class", whole_numbers(1)),
    Key("fewshot.seeds", 1, "draws per shot count"),
    Key("fewshot.l2", 2.0**10, "big_vision common_fewshot.py: l2_reg = 2**10"),

    Key("optim.name", "sgd", "sgd | adam | adamw", one_of(OPTIMIZERS)),
    Key("optim.lr", 0.003, "the peak learning rate", finite_at_least(0)),
    Key("optim.momentum", 0.9, "sgd momentum (0: none)"),
    Key("optim.nesterov", False, "sgd: Nesterov momentum"),
    Key("optim.b1", 0.9, "adam(w) beta1"),
    Key("optim.b2", 0.999, "adam(w) beta2"),
    Key("optim.mu_dtype", "", '"" = parameter dtype (float32); "bfloat16" halves momentum '
        "memory"),
    Key("optim.weight_decay", 0.0, "weight decay rate, times the wd_rules multiplier (adamw: "
        "decoupled)"),
    # First match: every weight matrix decays, the added ones too (LoRA's A and B, VPT prompts,
    # adapter kernels: HF Trainer decays all but biases and norms); biases, norms, SSF, ViT's
    # cls and pos_embedding do not (big_vision's config wd_mults `.*/kernel$`).
    Key("optim.wd_rules", ((".*/(kernel|lora_a|lora_b|prompts)", 1.0),),
        "(regex, multiplier), first match: which parameters decay"),
    # L2-SP is a regulariser, so it combines with any freeze schedule.
    Key("optim.l2sp", (), "(alpha, beta): L2-SP (Li et al. 2018), alpha/2 |w - w_pretrained|^2 "
        "on trainable pretrained weights + beta/2 |w|^2 on the new head",
        Check(_is_l2sp, "() or (alpha, beta) with both >= 0")),
    Key("optim.clip_norm", 0.0, "0: no clipping; clips the trainable gradients only"),
    Key("optim.schedule", "cosine", "cosine | linear | steps | constant", one_of(SCHEDULES)),
    Key("optim.warmup_steps", 0, "linear warmup steps"),
    Key("optim.decay_boundaries", (), 'absolute steps, for schedule="steps" (each /10)'),
)

# Checks that read several keys: run by config_lib.validate after every key's own check.
CROSS_CHECKS = (
    CrossCheck(lambda c: 0 <= c.stop_at_step <= c.total_steps,
               lambda c: f"config.stop_at_step={c.stop_at_step} must be in 0..total_steps="
                         f"{c.total_steps} (0: train to the end)"),
    CrossCheck(lambda c: not c.probe.method or c.data.val_split,
               lambda c: "a probe chooses its hyperparameter on validation: set data.val_split"),
)

check_table(KEYS)


def base():
    """The default config: every key of KEYS at its default (a fresh ConfigDict per call)."""
    return build(KEYS)

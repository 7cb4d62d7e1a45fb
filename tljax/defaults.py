"""Every config key a user may set, with its default. Config files start from `base()`
(re-exported by configs/common.py) and override; the locked ConfigDict rejects typos.
"""
import ml_collections as mlc


def base():
    c = mlc.ConfigDict()
    c.seed = 0
    c.parallelism = "jit"       # "jit" (SPMD over a Mesh), "fsdp" (jit + sharded params/opt state),
    #                             or "pmap" (per-device replicas, one process)
    c.accum_steps = 1           # gradient accumulation: microbatches per optimizer step
    c.accum_bn_microbatch_stats = False  # allow accum_steps > 1 while BatchNorm trains (each
    #                                      microbatch then normalises with its own statistics)
    c.total_steps = 500
    c.stop_at_step = 0          # > 0: stop after this step, with a validation and a checkpoint
    #                             there; the schedule stays total_steps long and a later start
    #                             with a larger value (or 0) resumes it (launch/search.py's rungs)
    c.log_every = 50            # progress line + metrics.jsonl train record
    c.eval_every = 100          # 0: only at the end
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.export_weights = True     # at the end: workdir/model.safetensors (final weights) and,
    #                             with a validation split, best.safetensors (selected weights)
    c.compilation_cache = "auto"  # XLA executables kept across runs: "auto" ($TLJAX_COMPILATION_CACHE,
    #                               else ~/.cache/tljax/xla), a folder, or "off"
    c.hyperrule = False         # BiT-HyperRule: resolution, schedule, lr and mixup from the data
    c.freeze = "full"           # freezing strategy string, e.g. "lp_ft:lp_steps=100"
    c.freeze_phases = ()        # or explicit phases, used instead of freeze when set:
    #                             ((start_step, ((regex, lr_mult or None), ...)), ...)

    c.model = mlc.ConfigDict()
    c.model.name = "bit"
    c.model.arch = mlc.ConfigDict({"block_counts": (3, 4, 6, 3), "width_factor": 1})
    c.model.num_classes = -1    # -1: from the dataset
    c.model.dtype = "float32"    # activations and matmuls; parameters and optimizer state stay float32
    c.model.forward_param_dtype = ""  # "bfloat16": parameters cast once per step for the forward
    #                                   pass (float32 master copy and gradients; docs/scale.md)
    c.model.attention = "auto"  # ViT attention kernel: auto | xla | cudnn (tljax/models/attention.py)
    c.model.init = ""           # weights source (see tljax.weights.load_model); "" = from scratch
    c.model.init_head = "reset"  # "reset": zero head; "keep": load the head too
    c.model.keep_pre_logits = False  # ViT i21k pre_logits layer: dropped with a new head, as
    #                                  vit_jax does when fine-tuning
    c.model.dropout = 0.0       # train-time only: ViT embeddings/attention output/MLP + head input
    #                             (vit_jax placement); BiT/ResNet head input
    c.model.attention_dropout = 0.0  # ViT attention probabilities
    c.model.drop_path = 0.0     # stochastic depth, linear over residual blocks: 0 first, this last
    #                             (timm's rule), ViT blocks and BiT/ResNet units
    c.model.peft = ""           # parameter-efficient modules to add beyond those config.freeze
    #                             names, e.g. "lora:r=8" for explicit freeze_phases to train
    c.model.init_recipe = ""    # config "path:arg" that produces model.init when it is missing
    c.model.check_preprocessing = True  # pp must normalise as the weights expect

    c.data = mlc.ConfigDict()
    c.data.name = "tljax_digits"   # a TFDS name, or "folder:/path" for a folder of images
    #                                 (see tljax/data/folder.py for the layouts)
    c.data.folder_fractions = (0.8, 0.1, 0.1)  # a one-tree image folder's train/validation/test
    c.data.folder_split_seed = 0  # fixed across run seeds: every seed sees the same test images
    c.data.data_dir = ""        # "" = TFDS default (~/tensorflow_datasets)
    c.data.manual_dir = ""
    c.data.train_split = "train"
    c.data.val_split = ""       # selection split (best step, best lr); "" = none: the final
    #                             step is reported. Never the test split.
    c.data.test_split = "test"  # evaluated once, at the end (final and validation-selected step)
    c.data.few_shot_k = 0       # >0: k examples per class of train_split
    c.data.few_shot_val_k = 0   # validation examples per class when val_split is the train split
    c.data.few_shot_seed = -1   # <0: the run seed
    c.data.image_size = 224     # the model's input resolution; {size} in pp strings stands for it
    c.data.pp_train = "inception_crop({size})|flip_lr|value_range(-1,1)"
    c.data.pp_eval = "resize({size})|value_range(-1,1)"
    c.data.batch_size = 512
    c.data.eval_batch_size = 512
    c.data.shuffle_buffer = 10_000
    c.data.cache = False
    c.data.mixup_alpha = 0.0    # >0: mixup with Beta(alpha, alpha) per batch
    c.data.cutmix_alpha = 0.0   # >0: CutMix (box side sqrt(1 - lam), lam ~ Beta(alpha, alpha))
    c.data.mix_prob = 1.0       # probability that a batch is mixed at all (timm Mixup `prob`)
    c.data.mix_switch_prob = 0.5  # with both alphas: probability of CutMix over mixup (timm)
    # Both pair example i with B-1-i of the global batch, in the train step.

    c.label_smoothing = 0.0     # targets (1 - e) one_hot + e / K (also on mixed labels)
    c.ema = mlc.ConfigDict()    # exponential moving average of the parameters that train and of
    #                             the BatchNorm statistics (timm ModelEmaV2 averages buffers too)
    c.ema.decay = 0.0           # > 0: kept in the train state, evaluated next to the raw weights
    c.ema.warmup = False        # decay min(decay, (1 + step) / (10 + step)) (TF num_updates)
    c.ema.export = False        # also write workdir/ema.safetensors at the end

    c.probe = mlc.ConfigDict()  # the pretrained model as a fixed feature extractor (tljax/probe/features.py)
    c.probe.method = ""         # "ridge" | "logreg" | "knn": fit this on cached pre-logits features
    #                             instead of training ("" = train as configured)
    c.probe.groups = ()         # also the pooled outputs of these depth groups, e.g. ("block10",
    #                             "block11"): a ViT's class token + mean patch token, a ResNet
    #                             stage's mean (for DINOv2's own input see n_last_blocks)
    c.probe.pre_logits = True   # the head's input (what the head of a fine-tuned model sees)
    c.probe.n_last_blocks = 0   # > 0 (ViT): DINOv2's linear input instead: the class tokens of the
    #                             last n blocks through the final norm (dinov2 eval/linear.py)
    c.probe.avgpool = False     # with n_last_blocks: also the last block's mean patch token
    c.probe.l2_regs = tuple(2.0**k for k in range(-4, 15, 2))  # ridge: chosen on validation
    c.probe.shots = (1, 5, 10, 25)  # ridge few-shot table (big_vision common_fewshot.py)
    c.probe.few_shot_l2 = 2.0**10  # its fixed l2 (big_vision common_fewshot.py: l2_reg = 2**10)
    c.probe.few_shot_seeds = 3
    c.probe.lrs = (0.001, 0.003, 0.01, 0.03, 0.1)  # logreg: heads trained at once, lr x wd,
    c.probe.wds = (0.0, 1e-4, 1e-3, 1e-2)          # the best on validation reported
    c.probe.epochs = 100
    c.probe.batch_size = 256
    c.probe.knn_ks = (1, 5, 10, 20)  # k-NN: k chosen on validation (DINO eval_knn.py: 20)
    c.probe.refit = False       # then refit on train + validation at the chosen value before
    #                             test (VTAB's train800val200; DINOv2 eval/log_regression.py)

    c.fewshot = mlc.ConfigDict()  # few-shot monitoring during fine-tuning (tljax/probe/monitor.py)
    c.fewshot.name = ""         # dataset whose ridge few-shot accuracy is logged at every evaluation
    c.fewshot.train_split = "train"
    c.fewshot.test_split = "test"
    c.fewshot.shots = (1, 5)
    c.fewshot.seeds = 1
    c.fewshot.l2 = 2.0**10      # big_vision common_fewshot.py: l2_reg = 2**10

    c.optim = mlc.ConfigDict()
    c.optim.name = "sgd"        # sgd | adam | adamw
    c.optim.lr = 0.003
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.mu_dtype = ""       # "" = parameter dtype (float32); "bfloat16" halves momentum memory
    c.optim.weight_decay = 0.0
    c.optim.wd_rules = ((".*/(kernel|lora_a|lora_b|prompts)", 1.0),)  # (regex, multiplier),
    #   first match: every weight matrix decays, the added ones too (LoRA's A and B, VPT
    #   prompts, adapter kernels: HF Trainer decays all but biases and norms); biases, norms,
    #   SSF, ViT's cls and pos_embedding do not (big_vision's config wd_mults `.*/kernel$`)
    c.optim.l2sp = ()           # (alpha, beta): L2-SP (Li et al. 2018), alpha/2 |w - w_pretrained|^2
    #                             on trainable pretrained weights + beta/2 |w|^2 on the new head;
    #                             a regulariser, so it combines with any freeze schedule
    c.optim.clip_norm = 0.0     # 0: no clipping; clips the trainable gradients only
    c.optim.schedule = "cosine"  # cosine | linear | steps | constant
    c.optim.warmup_steps = 0
    c.optim.decay_boundaries = ()  # absolute steps, for schedule="steps" (each /10)
    return c

"""Defaults shared by every config. Config files start from `base()` and override.

Every key a user may set exists here, so the locked ConfigDict rejects typos.
"""
import ml_collections as mlc


def base():
    c = mlc.ConfigDict()
    c.seed = 0
    c.parallelism = "jit"       # "jit" (SPMD over a Mesh), "fsdp" (jit + sharded params/opt state),
    #                             or "pmap" (per-device replicas, one process)
    c.accum_steps = 1           # gradient accumulation: microbatches per optimizer step
    c.total_steps = 500
    c.log_every = 50            # progress line + metrics.jsonl train record
    c.eval_every = 100          # 0: only at the end
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.export_weights = False    # write workdir/model.safetensors at the end
    c.hyperrule = False         # BiT-HyperRule: resolution, schedule, lr and mixup from the data
    c.freeze = "full"           # strategy string, or a list of (start_step, [(regex, mult|None)])

    c.model = mlc.ConfigDict()
    c.model.name = "bit"
    c.model.arch = mlc.ConfigDict({"block_counts": (3, 4, 6, 3), "width_factor": 1})
    c.model.num_classes = -1    # -1: from the dataset
    c.model.dtype = "float32"
    c.model.init = ""           # weights source (see tljax.weights.load_model); "" = from scratch
    c.model.init_head = "reset"  # "reset": zero head; "keep": load the head too
    c.model.init_recipe = ""    # config "path:arg" that produces model.init when it is missing
    c.model.check_preprocessing = True  # pp must normalise as the weights expect

    c.data = mlc.ConfigDict()
    c.data.name = "tljax_digits"
    c.data.data_dir = ""        # "" = TFDS default (~/tensorflow_datasets)
    c.data.manual_dir = ""
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.few_shot_k = 0       # >0: k examples per class of train_split
    c.data.few_shot_seed = -1   # <0: the run seed
    c.data.image_size = 224
    c.data.pp_train = "inception_crop(224)|flip_lr|value_range(-1,1)"
    c.data.pp_eval = "resize(224)|value_range(-1,1)"
    c.data.batch_size = 512
    c.data.eval_batch_size = 512
    c.data.shuffle_buffer = 10_000
    c.data.cache = False
    c.data.mixup_alpha = 0.0    # >0: mixup with Beta(alpha, alpha) per batch

    c.optim = mlc.ConfigDict()
    c.optim.name = "sgd"        # sgd | adam | adamw
    c.optim.lr = 0.003
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.mu_dtype = ""       # "" = parameter dtype (float32); "bfloat16" halves momentum memory
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0     # 0: no clipping; clips the trainable gradients only
    c.optim.schedule = "cosine"  # cosine | linear | steps | constant
    c.optim.warmup_steps = 0
    c.optim.decay_boundaries = ()  # absolute steps, for schedule="steps" (each /10)
    return c

"""One FGVC task with VPT's recipe (KMnP/vpt; the suite: tljax/experiments/fgvc.py):
`configs/fgvc.py:TASK,MODEL,SOLVER`, each optional (cub200, vit-b16-i21k, prompt; SOLVER
one of prompt, finetune, linear, vpetl).

    tljax suite --suite=fgvc --config=configs/fgvc.py:finetune --schedules=full ...
    python -m tljax.main --config=configs/fgvc.py:stanford_dogs,prompt \\
        --config.freeze=vpt:tokens=10 --workdir=/tmp/dogs

SOLVER `vpetl` is what V-PETL Bench's FGVC table ran (docs/dev/suite_facts.md §4: AdamW,
batch 64, 10 warmup epochs of 100, VPT's transforms, no label smoothing, its LoRA script's lr
and weight decay 0.05). The others are VPT's per transfer type
(configs/base-{prompt,finetune,linear}.yaml, the per-dataset BASE_LR and WEIGHT_DECAY of
configs/{prompt,finetune,linear}/TASK.yaml): `prompt` SGD momentum
0.9 batch 128, 10 warmup epochs; `finetune` AdamW batch 384, 5 warmup epochs; `linear` SGD
batch 1024, 10 warmup epochs; each 100 epochs of cosine decay. The freezing strategy is
--config.freeze: `prompt` sets VPT's default (5 shallow tokens; VPT tunes the length per
task), `finetune` and `linear` set full and linear_probe. Images (src/data/transforms.py):
train Resize(256) (shorter side) → RandomCrop(224) → flip, eval Resize(256) → CenterCrop(224), ImageNet mean/std for every
backbone. The model VPT's tables use is the original ImageNet-21k ViT-B/16 at 224 px
(`sup_vitb16_224`, catalog ViT-B_16), the default here.

Where tljax differs from VPT's code (so rows are comparable only up to these):
  - VPT's validation lists are its own random 10 % of train; tljax takes TFDS's last 10 %;
  - VPT steps its cosine once per epoch; tljax every step (at most one epoch apart);
  - torchvision truncates the longer side after Resize(256) (int()); tljax rounds it;
  - VPT's AdamW decays every non-bias, non-LayerNorm tensor at 0.01 whatever WEIGHT_DECAY
    says (src/solver/optimizer.py); tljax decays kernels only (optim.wd_rules), at the
    task's WEIGHT_DECAY x lr, as optax.adamw does.
  - VPT sweeps BASE_LR x WEIGHT_DECAY per task on validation (tune_fgvc.py); these are its
    config files' values, a starting point: sweep optim.lr with `tljax sweep --grid`.
"""
from configs import transfer, vpt
from tljax.experiments import fgvc

# VPT's train-split sizes (paper Table 8, docs/dev/suite_facts.md §4): epochs become steps.
TRAIN_EXAMPLES = {"cub200": 5394, "nabirds": 21536, "flowers102": 1020,
                  "stanford_dogs": 10800, "stanford_cars": 7329}
# (optimizer, batch, warmup epochs) of configs/base-{SOLVER}.yaml (configs/vpt.py), and
# V-PETL Bench's FGVC configs (ImageClassification/configs/model_*/fgvc/*.yaml).
SOLVERS = {**vpt.SOLVERS, "vpetl": ("adamw", 64, 10)}
# (BASE_LR, WEIGHT_DECAY) of configs/{SOLVER}/{task}.yaml.
BASE = {
    "prompt": {"cub200": (0.1, 0.01), "nabirds": (0.1, 0.01), "flowers102": (0.001, 1e-4),
               "stanford_dogs": (0.001, 1e-4), "stanford_cars": (0.001, 1e-4)},
    "finetune": {"cub200": (0.00375, 0.01), "nabirds": (0.00375, 0.01),
                 "flowers102": (0.001, 1e-4), "stanford_dogs": (0.00375, 0.001),
                 "stanford_cars": (0.0375, 0.001)},
    "linear": {"cub200": (0.1, 0.01), "nabirds": (0.1, 0.01), "flowers102": (0.001, 1e-4),
               "stanford_dogs": (0.001, 1e-4), "stanford_cars": (0.001, 1e-4)},
    # V-PETL Bench scripts/run_vit_lora.sh l.6-14 (its LoRA rows; wd 5e-2 throughout)
    "vpetl": {"cub200": (1e-3, 0.05), "nabirds": (2e-4, 0.05), "flowers102": (1e-3, 0.05),
              "stanford_dogs": (2.5e-4, 0.05), "stanford_cars": (2e-3, 0.05)},
}
IMAGENET = vpt.IMAGENET


def get_config(arg=""):
    parts = [p for p in arg.split(",") if p]
    tasks = [p for p in parts if p in fgvc.TASKS]
    solvers = [p for p in parts if p in SOLVERS]
    models = [p for p in parts if p not in fgvc.TASKS and p not in SOLVERS]
    if len(tasks) > 1 or len(solvers) > 1 or len(models) > 1 or any(
            m not in transfer.MODELS for m in models):
        raise ValueError(f"configs/fgvc.py:{arg}: give at most one task ({', '.join(fgvc.TASKS)}), "
                         f"one model ({', '.join(sorted(transfer.MODELS))}) and one solver "
                         f"({', '.join(SOLVERS)})")
    task = fgvc.TASKS[tasks[0] if tasks else "cub200"]
    solver = solvers[0] if solvers else "prompt"
    model = models[0] if models else "vit-b16-i21k"
    c = transfer.config(task.data_name, (task.train, task.val, task.test), model)
    c.hyperrule = False  # VPT's recipe for every model
    c.data.image_size = 224
    c.data.pp_train = f"resize_small(256)|random_crop({{size}})|flip_lr|{IMAGENET}"
    c.data.pp_eval = f"resize_small(256)|central_crop({{size}})|{IMAGENET}"
    vpt.apply_solver(c, *SOLVERS[solver], TRAIN_EXAMPLES[task.name])
    c.optim.lr, c.optim.weight_decay = BASE[solver][task.name]
    if solver in vpt.SOLVERS:
        c.freeze = vpt.freeze_of(solver)
    return c

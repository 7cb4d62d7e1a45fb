"""One VTAB-1k task (tljax/data/vtab.py): `configs/vtab.py:TASK,MODEL,RECIPE`, each optional
(task caltech101; recipe task_adaptation, model vit-b16; recipes vpetl and vpt-*, model
vit-b16-i21k; models as configs/transfer.py).

    python -m tljax.main --config=configs/vtab.py:dtd,dinov2-b14 --workdir=/tmp/vtab_dtd
    tljax suite --suite=vtab1k --config=configs/vtab.py:vit-b16 ...   # all 19

data.name="vtab:TASK" and the protocol's split names: train800 trains, val200 validates, test
reports; the final VTAB-1k run is `--config.data.train_split=train800val200
--config.data.val_split=""` (tljax suite runs both stages).

RECIPE `task_adaptation` (the default): task_adaptation's own (scripts/run_all_tasks.sh
l.42-61, adapt_and_eval.py l.73-74): SGD momentum 0.9, batch 64, lr 0.01, 1000 steps, 80
warmup steps, lr x0.1 after steps 300, 600 and 900 (trainer.py: tf.train.piecewise_constant
keeps the old lr at the boundary step); images resized to 224 x 224 by TF1's bilinear resize
(`resize_tf1`: no half-pixel centres, no antialias) with no augmentation
(task_adaptation/data_loader.py l.61-69), normalised as the checkpoint expects (init_norm).
When a grid varies total_steps, set optim.schedule=cosine (the decay steps are absolute).
vision_transformer's AugReg notebook sweeps steps {500, 2500} x lr {0.001, 0.003, 0.01, 0.03}
on val200 (docs/dev/suite_facts.md).

RECIPE `vpetl`: what V-PETL Bench's VTAB-1k table ran (docs/dev/suite_facts.md §2a, from its
ImageClassification/configs, train/train_model_*.py and dataloader/vtab.py): the original
ImageNet-21k ViT-B/16 at 224 px, Resize((224, 224)) and ImageNet mean/std, AdamW, batch 64,
100 epochs of the 1000 train800val200 examples (1600 steps) with 10 warmup epochs and a cosine
decay, drop-path 0.1. What it cannot share: V-PETL turns RandAugment + colour jitter and
label smoothing 0.1 on per task (the table in suite_facts.md §2a; `--config.label_smoothing`,
`--config.data.pp_train` per task), tunes lr and weight decay per method and task, steps its
cosine per epoch down to lr_min 1e-5, and reports the best *test* accuracy over evaluations.
tljax chooses on val200 and reads test once, so its rows are comparable in backbone and
schedule, not in selection.

RECIPES `vpt-prompt`, `vpt-finetune`, `vpt-linear`: VPT's own (KMnP/vpt), one per transfer type,
which produced the Full, Linear, VPT-Shallow and VPT-Deep rows that V-PETL Bench's table
copies: the original ImageNet-21k ViT-B/16, images resized to 224 x 224 by tf.compat.v1's
bilinear resize (src/data/datasets/tf_dataset.py; `resize_tf1`), no augmentation, ImageNet
mean/std; the solver of configs/vpt.py over 100 epochs of train800val200; the lr is the base
lr x batch/256 (tune_vtab.py l.100). VPT's protocol is tljax's: lr and weight decay chosen on
val200 (last epoch), the final run on train800val200, test read at its end, averaged over
5 seeds (tune_vtab.py l.3, l.105). Its per-task lr, weight decay and prompt length are in an
external release, not in the repository, so the defaults are starting points: prompt takes its
demo's (demo.ipynb: dmlab and eurosat, deep prompts, base lr 1.0, weight decay 1e-3), linear
borrows them, finetune takes base lr 5e-4 and weight decay 1e-4 from its grids (my choice).
Sweep on val200 over its grids, in optim.lr units base x batch/256: base lr {50, 25, 10, 5,
2.5, 1, 0.5, 0.25, 0.1, 0.05} for prompt and linear, {1e-3, 1e-4, 5e-4, 5e-3} for finetune;
weight decay {0.01, 1e-3, 1e-4, 0}. What differs: VPT steps its cosine per epoch (tljax per
step); its AdamW decays non-bias, non-LayerNorm tensors at 0.01 whenever the weight decay is
> 0, and at weight decay 0 it runs SGD instead (src/solver/optimizer.py); its end-to-end ViT
trains with dropout 0.1; at batch 1024 its linear epoch is one batch of the 1000 examples
(tljax repeats examples to fill the batch). VPT-Deep: --config.freeze=vpt:tokens=N,deep=1.
"""
import math

from configs import transfer, vpt
from tljax.data import vtab


VPT_RECIPES = {f"vpt-{solver}": solver for solver in vpt.SOLVERS}
RECIPES = ("task_adaptation", "vpetl", *VPT_RECIPES)
DEFAULT_MODEL = {"task_adaptation": "vit-b16", "vpetl": "vit-b16-i21k",
                 **{recipe: "vit-b16-i21k" for recipe in VPT_RECIPES}}
IMAGENET = vpt.IMAGENET  # V-PETL's and VPT's, for every backbone
TRAIN800VAL200 = 1000  # the final run's examples: epochs become steps
# (base lr, weight decay) per VPT transfer type (the docstring says where from).
VPT_BASE = {"prompt": (1.0, 1e-3), "linear": (1.0, 1e-3), "finetune": (5e-4, 1e-4)}


def get_config(arg=""):
    parts = [p for p in arg.split(",") if p]
    tasks = [p for p in parts if p in vtab.TASKS]
    recipes = [p for p in parts if p in RECIPES]
    models = [p for p in parts if p not in vtab.TASKS and p not in RECIPES]
    unknown = [m for m in models if m not in transfer.MODELS]
    if unknown or len(tasks) > 1 or len(models) > 1 or len(recipes) > 1:
        raise ValueError(f"configs/vtab.py:{arg}: give at most one task ({', '.join(vtab.TASKS)}), "
                         f"one model ({', '.join(sorted(transfer.MODELS))}) and one recipe "
                         f"({', '.join(RECIPES)})")
    task = tasks[0] if tasks else "caltech101"
    recipe = recipes[0] if recipes else "task_adaptation"
    c = transfer.config(f"{vtab.PREFIX}{task}", ("train800", "val200", "test"),
                        models[0] if models else DEFAULT_MODEL[recipe])
    c.hyperrule = False  # the same recipe for every model: the benchmark's
    c.data.image_size = 224
    c.data.eval_batch_size = 200
    c.data.batch_size = 64
    c.optim.clip_norm = 0.0  # neither clips
    if recipe == "task_adaptation":
        c.data.pp_train = c.data.pp_eval = f"resize_tf1({{size}})|{transfer.NORM}"
        c.total_steps = 1000
        c.optim.lr = 0.01
        c.optim.schedule = "steps"
        c.optim.decay_boundaries = (300, 600, 900)
        c.optim.warmup_steps = 80
        c.eval_every = c.checkpoint_every = 250
    elif recipe in VPT_RECIPES:
        solver = VPT_RECIPES[recipe]
        optimizer, batch, warmup_epochs = vpt.SOLVERS[solver]
        c.data.pp_train = c.data.pp_eval = f"resize_tf1({{size}})|{IMAGENET}"
        vpt.apply_solver(c, optimizer, batch, warmup_epochs, TRAIN800VAL200)
        base_lr, c.optim.weight_decay = VPT_BASE[solver]
        c.optim.lr = base_lr * batch / 256
        c.freeze = vpt.freeze_of(solver)
    else:
        per_epoch = math.ceil(TRAIN800VAL200 / 64)  # batch 64, drop_last=False: 16 steps
        c.data.pp_train = c.data.pp_eval = f"resize({{size}})|{IMAGENET}"
        c.total_steps = 100 * per_epoch
        c.optim.name = "adamw"
        c.optim.lr = 1e-3  # V-PETL tunes it per method and task: sweep it on val200
        c.optim.weight_decay = 1e-4
        c.optim.schedule = "cosine"
        c.optim.warmup_steps = 10 * per_epoch
        c.model.drop_path = 0.1  # --dpr 0.1 in every V-PETL script
        c.eval_every = c.checkpoint_every = 10 * per_epoch
    return c

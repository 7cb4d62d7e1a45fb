"""VPT's solver per transfer type (KMnP/vpt configs/base-{prompt,finetune,linear}.yaml), the
one definition configs/fgvc.py and configs/vtab.py share: `prompt` SGD momentum 0.9 at batch
128 with 10 warmup epochs, `finetune` AdamW at batch 384 with 5, `linear` SGD at batch 1024
with 10, each 100 epochs of cosine decay, nothing clipped (src/solver/optimizer.py,
lr_scheduler.py); images normalised with ImageNet's mean and std for every backbone
(src/data/transforms.py, datasets/tf_dataset.py)."""
import math

SOLVERS = {"prompt": ("sgd", 128, 10), "finetune": ("adamw", 384, 5), "linear": ("sgd", 1024, 10)}
EPOCHS = 100
IMAGENET = "normalize([0.485,0.456,0.406],[0.229,0.224,0.225])"


def apply_solver(c, optimizer, batch, warmup_epochs, train_examples):
    """Sets `c`'s batch, optimizer and schedule: epochs of `train_examples` at `batch` become
    steps (drop_last=False on one GPU), evaluations and checkpoints every 10 epochs."""
    steps_per_epoch = math.ceil(train_examples / batch)
    c.data.batch_size = batch
    c.optim.name = optimizer
    c.optim.clip_norm = 0.0  # VPT clips nothing
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = warmup_epochs * steps_per_epoch
    c.total_steps = EPOCHS * steps_per_epoch
    c.eval_every = c.checkpoint_every = 10 * steps_per_epoch


def freeze_of(solver):
    """What a transfer type trains: prompt VPT's defaults (src/configs/config.py: 5 tokens,
    shallow; it tunes the length per task: --config.freeze=vpt:tokens=N,deep=1)."""
    return {"prompt": "vpt:tokens=5,deep=0", "finetune": "full", "linear": "linear_probe"}[solver]

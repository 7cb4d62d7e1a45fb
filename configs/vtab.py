"""One VTAB-1k task (tljax/data/vtab.py): `configs/vtab.py:TASK,MODEL` (either may be left out:
task caltech101, model vit-b16; models as configs/transfer.py).

    python -m tljax.main --config=configs/vtab.py:dtd,dinov2-b14 --workdir=/tmp/vtab_dtd
    tljax suite --suite=vtab1k --config=configs/vtab.py:vit-b16 ...   # all 19

data.name="vtab:TASK" and the protocol's split names: train800 trains, val200 validates, test
reports; the final VTAB-1k run is `--config.data.train_split=train800val200
--config.data.val_split=""` (tljax suite runs both stages).

Recipe: task_adaptation's own (scripts/run_all_tasks.sh l.42-61, adapt_and_eval.py l.73-74):
SGD momentum 0.9, batch 64, lr 0.01, 1000 steps, 80 warmup steps, lr x0.1 after steps 300,
600 and 900 (trainer.py: tf.train.piecewise_constant keeps the old lr at the boundary step);
images resized to 224 x 224 by TF1's bilinear resize (`resize_tf1`: no half-pixel centres, no
antialias) with no augmentation (task_adaptation/data_loader.py l.61-69), normalised as the checkpoint expects (init_norm). When a grid varies total_steps, set
optim.schedule=cosine (the decay steps are absolute). vision_transformer's AugReg notebook
sweeps steps {500, 2500} x lr {0.001, 0.003, 0.01, 0.03} on val200 (docs/dev/suite_facts.md).
"""
from configs import transfer
from tljax.data import vtab


def get_config(arg=""):
    parts = [p for p in arg.split(",") if p]
    tasks = [p for p in parts if p in vtab.TASKS]
    models = [p for p in parts if p not in vtab.TASKS]
    unknown = [m for m in models if m not in transfer.MODELS]
    if unknown or len(tasks) > 1 or len(models) > 1:
        raise ValueError(f"configs/vtab.py:{arg}: give at most one task ({', '.join(vtab.TASKS)}) "
                         f"and one model ({', '.join(sorted(transfer.MODELS))})")
    task = tasks[0] if tasks else "caltech101"
    c = transfer.config(f"{vtab.PREFIX}{task}", ("train800", "val200", "test"),
                        models[0] if models else "vit-b16")
    c.hyperrule = False  # the same recipe for every model: the benchmark's
    c.data.image_size = 224
    c.data.pp_train = c.data.pp_eval = f"resize_tf1({{size}})|{transfer.NORM}"
    c.data.batch_size = 64
    c.data.eval_batch_size = 200
    c.total_steps = 1000
    c.optim.lr = 0.01
    c.optim.schedule = "steps"
    c.optim.decay_boundaries = (300, 600, 900)
    c.optim.warmup_steps = 80
    c.optim.clip_norm = 0.0  # task_adaptation clips nothing
    c.eval_every = 250
    c.checkpoint_every = 250
    return c

"""Fine-tuning a pretrained language model on a text classification task.

    tljax train --config=configs/text.py:sst2,bert-base --workdir=/tmp/sst2
    tljax train --config=configs/text.py:/path/to/my_text,roberta-base --workdir=/tmp/mine

The argument is a task and a model after a comma. Tasks: sst2, mrpc, rte, cola, imdb,
ag_news (TFDS datasets, prepared in data.data_dir), or a path to your own text (a folder of
train/validation/test .csv or .jsonl files, one such file, or folders of .txt files per
class: tljax/data/text.py). Models: MODELS below (hub names), or a Hugging Face folder.

The recipe is BERT's (google-research/bert run_classifier.py: batch 32, 3 epochs, learning
rate 5e-5 with 10 % linear warmup, then linear decay; Devlin et al. 2019 chose the rate among
5e-5, 4e-5, 3e-5, 2e-5 on the dev set, as `tljax sweep --grid=optim.lr=...` does on
validation here), with AdamW and weight decay 0.01 on kernels. GLUE hides its test labels:
the last 5 % of train selects, the dev set ("validation") is reported.
"""
import math

from configs import common

MODELS = {"bert-base": "hf:google-bert/bert-base-uncased",
          "roberta-base": "hf:FacebookAI/roberta-base",
          "distilbert-base": "hf:distilbert/distilbert-base-uncased",
          "gpt2": "hf:openai-community/gpt2"}
FAMILIES = {"bert-base": "bert", "roberta-base": "bert", "distilbert-base": "bert", "gpt2": "gpt2"}
# task -> (TFDS name, train examples, max length); splits below
TASKS = {"sst2": ("glue/sst2", 67_349, 64), "mrpc": ("glue/mrpc", 3_668, 128),
         "rte": ("glue/rte", 2_490, 128), "cola": ("glue/cola", 8_551, 64),
         "imdb": ("imdb_reviews", 25_000, 512), "ag_news": ("ag_news_subset", 120_000, 128)}
BATCH, EPOCHS, OWN_TEXT_STEPS = 32, 3, 1000


def get_config(arg="sst2,bert-base"):
    task, _, model = arg.partition(",")
    model = model or "bert-base"
    c = common.base()
    c.model.name = FAMILIES.get(model, "gpt2" if "gpt2" in model.lower() else "bert")
    c.model.arch = {}  # the checkpoint's
    c.model.init = MODELS.get(model, model)
    if task in TASKS:
        name, count, max_length = TASKS[task]
        c.data.name, c.data.max_length = name, max_length
        c.total_steps = math.ceil(EPOCHS * count * 0.95 / BATCH)
        if name.startswith("glue/"):
            c.data.train_split, c.data.val_split = "train[:95%]", "train[95%:]"
            c.data.test_split = "validation"
        else:
            c.data.train_split, c.data.val_split = "train[:95%]", "train[95%:]"
    else:
        c.data.name, c.data.max_length = f"text:{task}", 128
        c.data.val_split, c.data.test_split = "validation", "test"
        c.total_steps = OWN_TEXT_STEPS
    c.data.batch_size, c.data.eval_batch_size = BATCH, 128
    c.optim.name, c.optim.lr, c.optim.weight_decay = "adamw", 5e-5, 0.01
    c.optim.schedule = "linear"
    c.optim.warmup_steps = c.total_steps // 10
    c.eval_every = c.checkpoint_every = max(c.total_steps // 10, 1)
    c.log_every = 50
    return c

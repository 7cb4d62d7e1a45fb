"""Text runs end to end on data the test writes: a tokenizer trained here (HF `tokenizers`),
CSV splits of a three-topic task, tiny BERT and GPT-2 backbones saved as Hugging Face folders.
Freezing strategies and PEFT methods train above chance and leave their frozen parameters
bit-identical; the tokenised cache is reused, and rebuilt when the tokenizer changes; bad
rows are one line naming the file and row; batches are padded to length buckets only.
"""
import csv
import os
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tljax import runs  # noqa: E402
from tljax.data import text, tokens  # noqa: E402
from tljax.errors import UserError  # noqa: E402

from tests.helpers import assert_trained_only, checkpoint_params, record_initial_params  # noqa: E402

TOPICS = {"fruit": "apple banana cherry grape lemon mango melon peach pear plum".split(),
          "travel": "bus car ferry plane ship taxi train tram truck bike".split(),
          "weather": "rain snow wind storm cloud fog hail sun frost mist".split()}
FILLER = "the a of and to in is it that was for on are with as".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def _sentence(rng, topic, max_words=24):
    words = [rng.choice(TOPICS[topic]) if rng.random() < 0.4 else rng.choice(FILLER)
             for _ in range(rng.randint(3, max_words))]
    words[rng.randrange(len(words))] = rng.choice(TOPICS[topic])  # at least one topic word
    return " ".join(words)


def _write_csv(path, rows, columns=("text", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def train_tokenizer(path, corpus, vocab_size=80):
    """A WordPiece tokenizer trained on `corpus`, with BERT's [CLS] A [SEP] (B [SEP]) template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                              special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tok.save(str(path))
    return tok


def _write_task(folder, seed, sizes):
    rng = random.Random(seed)
    folder.mkdir()
    sets = {split: [(_sentence(rng, topic), topic) for _ in range(n) for topic in TOPICS]
            for split, n in sizes}
    for split, rows in sets.items():
        _write_csv(folder / f"{split}.csv", rows)
    return [t for rows in sets.values() for t, _ in rows]


@pytest.fixture(scope="module")
def text_task(tmp_path_factory):
    """(target data folder with train/validation/test.csv, BERT folder, GPT-2 folder): random
    backbones saved as Hugging Face folders with the tokenizer, and a source task (the same
    topics, other sentences) to pretrain them on (source_runs)."""
    root = tmp_path_factory.mktemp("text")
    corpus = _write_task(root / "data", 0, (("train", 16), ("validation", 8), ("test", 10)))
    corpus += _write_task(root / "source", 1, (("train", 40), ("validation", 8), ("test", 8)))
    tok = train_tokenizer(root / "tokenizer.json", corpus)
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    # initializer_range 0.2, not 0.02: a random BERT at 0.02 gives nearly one [CLS] feature
    # for every text, and its pretraining here would stall.
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0, initializer_range=0.2))
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=2,
        eos_token_id=3))
    folders = []
    for name, model in (("bert", bert), ("gpt2", gpt2)):
        model.save_pretrained(root / name)
        tok.save(str(root / name / "tokenizer.json"))
        folders.append(str(root / name))
    return str(root / "data"), *folders


@pytest.fixture(scope="module")
def source_runs(text_task, tmp_path_factory):
    """{family: a tljax run that fine-tuned the random backbone on the source task}: the
    pretrained models the adaptation methods start from (with the tokenizer it recorded)."""
    data, *folders = text_task
    out = {}
    for family, folder in zip(("bert", "gpt2"), folders):
        workdir = str(tmp_path_factory.mktemp(f"{family}_source"))
        config = text_config(data.replace("data", "source"), folder, family, total_steps=100,
                             **{"optim.lr": 1e-3})
        assert runs.run(config, workdir)["test_accuracy"] > 0.6
        out[family] = workdir
    return out


def text_config(data_folder, model_folder, family, **overrides):
    from tljax.defaults import base

    c = base()
    c.data.name = f"text:{data_folder}"
    c.data.val_split, c.data.test_split = "validation", "test"
    c.data.max_length = 32
    c.data.batch_size, c.data.eval_batch_size = 16, 32
    c.model.name, c.model.arch, c.model.init = family, {}, model_folder
    c.optim.name, c.optim.lr, c.optim.weight_decay = "adamw", 3e-3, 0.0
    c.optim.warmup_steps = 3
    c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 40, 10, 0, 40
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    c.lock()
    return c


# spec -> regex of the parameters it trains (besides the head)
SPECS = {"linear_probe": r"head/.*", "bitfit": r".*/bias|head/.*",
         "lora:r=4": r".*/lora_[ab]|head/.*", "gradual:every=10": None,
         "vpt:tokens=4,deep=0": r".*/prompts|head/.*"}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_text_runs_learn_and_keep_frozen_parts(text_task, source_runs, family, spec, tmp_path,
                                               monkeypatch):
    """From a backbone pretrained on the source task (a tljax run: its export and recorded
    tokenizer), each method learns the target task with a new head and trains only what it
    says."""
    import re

    starts = record_initial_params(monkeypatch)
    config = text_config(text_task[0], source_runs[family], family, freeze=spec)
    summary = runs.run(config, str(tmp_path))
    assert summary["test_accuracy"] > 0.6, summary  # 3 classes: chance is 1/3
    final, initial = checkpoint_params(str(tmp_path)), starts[0]
    if SPECS[spec] is not None:
        trained = [p for p in final if re.fullmatch(SPECS[spec], p)]
        assert_trained_only(summary, initial, final, trained)


def test_token_cache_is_reused_and_rebuilt_for_another_tokenizer(text_task, tmp_path, monkeypatch):
    data_folder, bert, _ = text_task
    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path / "cache"))
    texts = text.Texts(["apple banana", "bus car ferry"], None, np.array([0, 1]))
    first = tokens.tokenize(texts, bert, 16)
    cached = os.listdir(tmp_path / "cache" / "tokens")
    assert len(cached) == 1
    monkeypatch.setattr(tokens, "load_tokenizer", lambda *a: pytest.fail("tokenised again"))
    again = tokens.tokenize(texts, bert, 16)
    np.testing.assert_array_equal(again.ids, first.ids)
    monkeypatch.undo()
    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.json"
    train_tokenizer(other, ["apple banana bus car ferry"] * 3, vocab_size=30)
    changed = tokens.tokenize(texts, str(other), 16)
    assert len(os.listdir(tmp_path / "cache" / "tokens")) == 2
    assert not np.array_equal(changed.ids, first.ids)


def test_batches_pad_to_length_buckets_and_count_every_example_once(text_task):
    data_folder, bert, _ = text_task
    cfg = text_config(data_folder, bert, "bert", **{"data.tokenizer": bert, "data.pad_id": 0}).data
    batches, count = tokens.eval_batches(cfg, seed=0, global_batch=8, which="test")
    assert count == 30 and sum(int(b["mask"].sum()) for b in batches) == 30
    for b in batches:
        longest = int(b["attention_mask"].sum(1).max())
        assert b["input_ids"].shape[1] == tokens.bucket_length(longest, 32) < 2 * max(longest, 8) + 1
    train = tokens.train_batches(cfg, seed=0, global_batch=8)
    lengths = {next(train)["input_ids"].shape[1] for _ in range(12)}
    assert lengths <= {16, 32}


def test_two_processes_see_the_one_process_batches(text_task):
    data_folder, bert, _ = text_task
    cfg = text_config(data_folder, bert, "bert", **{"data.tokenizer": bert, "data.pad_id": 0}).data
    one = tokens.train_batches(cfg, seed=1, global_batch=8)
    halves = [tokens.train_batches(cfg, seed=1, global_batch=8, process_index=p, process_count=2)
              for p in range(2)]
    resumed = tokens.train_batches(cfg, seed=1, global_batch=8, start_step=5)
    for step in range(9):
        whole = next(one)
        parts = [next(h) for h in halves]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
        if step >= 5:
            np.testing.assert_array_equal(next(resumed)["input_ids"], whole["input_ids"])


@pytest.mark.parametrize("content,message", [
    ("text,label\nhello,a\n,b\n", "row 3: empty text"),
    ("words,label\nhello,a\n", "row 2: no 'text' column"),
])
def test_bad_csv_rows_are_one_line_naming_file_and_row(tmp_path, content, message):
    (tmp_path / "train.csv").write_text(content)
    cfg = text_config(str(tmp_path), "", "bert").data
    with pytest.raises(UserError, match=message) as raised:
        text.read_split(cfg, "train")
    assert str(tmp_path / "train.csv") in str(raised.value) and "\n" not in str(raised.value)


def test_a_test_label_the_train_set_lacks_is_one_line_naming_file_and_row(tmp_path):
    _write_csv(tmp_path / "train.csv", [("apple", "fruit"), ("bus", "travel")])
    _write_csv(tmp_path / "test.csv", [("pear", "fruit"), ("snow", "weather")])
    with pytest.raises(UserError, match=r"test.csv row 3: label 'weather' is not one of the "
                                        r"train set's \(fruit, travel\)"):
        text.read_split(text_config(str(tmp_path), "", "bert").data, "test")


@pytest.mark.parametrize("layout", ["txt_folders", "one_csv", "jsonl_splits"])
def test_own_text_layouts_read_alike(tmp_path, layout):
    """Folders of .txt files per class, one CSV split per class by data.folder_fractions, and
    JSONL split files give the same classes; the one-file split is disjoint and complete."""
    import json

    rows = [(f"{word} number {i}", topic) for topic, words in TOPICS.items()
            for i, word in enumerate(words)]
    if layout == "txt_folders":
        for i, (sentence, topic) in enumerate(rows):
            (tmp_path / topic).mkdir(exist_ok=True)
            (tmp_path / topic / f"{i}.txt").write_text(sentence)
        name = str(tmp_path)
    elif layout == "one_csv":
        _write_csv(tmp_path / "all.csv", rows)
        name = str(tmp_path / "all.csv")
    else:
        for split, part in (("train", rows[::2]), ("val", rows[1::4]), ("test", rows[3::4])):
            (tmp_path / f"{split}.jsonl").write_text(
                "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in part))
        name = str(tmp_path)
    cfg = text_config(name, "", "bert").data
    assert text.class_names(cfg) == sorted(TOPICS)
    sets = {split: text.read_split(cfg, split) for split in ("train", "validation", "test")}
    assert sum(len(s) for s in sets.values()) == len(rows)
    assert not set(sets["train"].texts) & set(sets["test"].texts)


def test_long_texts_are_truncated_with_a_count(text_task, tmp_path, monkeypatch, caplog):
    import logging

    _, bert, _ = text_task
    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path))
    texts = text.Texts(["apple " * 40, "bus car"], None, np.array([0, 1]))
    with caplog.at_level(logging.INFO):
        got = tokens.tokenize(texts, bert, 16)
    assert got.lengths[0] == 16 and got.lengths[1] < 16
    assert "1 of 2 texts are longer than data.max_length=16" in caplog.text


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_evaluate_and_predict_reproduce_the_runs_test_accuracy(text_task, source_runs, family):
    """`evaluate` on the run's test set and `predict` on the test CSV (a file of texts, as a
    user gives it) tokenize as the run did (its recorded tokenizer.json, length and pad id)
    and give its test accuracy; one string alone gets the probabilities it gets in a batch."""
    from tljax import evaluation, inference, paths

    run = source_runs[family]
    summary = paths.read_json(os.path.join(run, "summary.json"))
    predictor = inference.Predictor.load(run)
    cfg, which, seed = evaluation.data_config(run, "", "test")
    assert evaluation.evaluate(predictor, cfg, which, seed, 8)["accuracy"] == pytest.approx(
        summary["test_accuracy"], abs=1e-6)
    test_csv = os.path.join(text_task[0].replace("data", "source"), "test.csv")
    results = inference.predict_texts(predictor, inference.read_texts([test_csv]), top_k=1)
    with open(test_csv) as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    correct = [r["top"][0][0] == label for r, label in zip(results, labels)]
    assert np.mean(correct) == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # The test CSV given as other data (`tljax evaluate --data=text:FILE`: every row evaluated).
    cfg, which, seed = evaluation.data_config(run, f"text:{test_csv}", "test")
    assert evaluation.evaluate(predictor, cfg, which, seed, 8)["accuracy"] == pytest.approx(
        summary["test_accuracy"], abs=1e-6)
    alone = inference.predict_texts(predictor, [(results[5]["text"], None)], top_k=3)[0]
    full = inference.predict_texts(predictor, inference.read_texts([test_csv]), top_k=3)[5]
    assert [n for n, _ in alone["top"]] == [n for n, _ in full["top"]]
    np.testing.assert_allclose([p for _, p in alone["top"]], [p for _, p in full["top"]], rtol=1e-5)


def test_pydoc_dataset_is_python_docs_with_disjoint_source_and_target_topics(tmp_path, monkeypatch):
    """The offline text default's data: paragraphs of the language reference that ships with
    Python, the source topics' splits disjoint, no target topic among the source's."""
    from configs import pydoc
    from tljax import data
    from tljax.data import pydoc_topics

    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path))
    source = pydoc.get_config("pretrain").data
    target = pydoc.get_config("scratch").data
    assert data.class_names(source) == sorted(pydoc_topics.SOURCE)
    assert data.class_names(target) == sorted(pydoc_topics.TARGET)
    sets = {which: tokens.texts_of(source, which, 0).texts for which in ("train", "validation", "test")}
    assert not set(sets["train"]) & set(sets["test"]) and not set(sets["train"]) & set(sets["validation"])
    few = {which: tokens.texts_of(target, which, 0) for which in ("train", "validation", "test")}
    assert [len(few[w]) for w in ("train", "validation")] == [4 * 5, 8 * 5]
    assert not set(few["train"].texts) & set(few["test"].texts)
    assert os.path.exists(source.tokenizer)  # prepared with the data, read by the scratch runs


def test_a_tfds_text_dataset_trains_under_mock_data(text_task, tmp_path):
    """configs/text.py:sst2 (GLUE's SST-2 through TFDS, its dev set reported) on
    tfds.testing.mock_data's random sentences, with the test's tiny BERT: the pipeline reads
    the TFDS text fields, tokenises, and trains."""
    import tensorflow_datasets as tfds

    from configs import text as text_config_file

    config = text_config_file.get_config(f"sst2,{text_task[1]}")
    assert (config.data.train_split, config.data.val_split, config.data.test_split) == (
        "train[:95%]", "train[95%:]", "validation")
    with config.unlocked():
        config.total_steps, config.data.batch_size, config.data.max_length = 4, 8, 32
        config.optim.warmup_steps, config.eval_every, config.checkpoint_every = 1, 4, 4
    with tfds.testing.mock_data(num_examples=40):
        texts = text.read_split(config.data, "train[:95%]")
        assert len(texts) and texts.pairs is None and set(texts.labels) <= {0, 1}  # (mock_data
        # gives num_examples whatever the slice)
        summary = runs.run(config, str(tmp_path / "run"))
    assert summary["status"] == "done" and summary["test_accuracy"] is not None


@pytest.mark.parametrize("family,groups", [("bert", ()), ("gpt2", ("block1",))])
def test_probes_fit_on_text_features(text_task, source_runs, family, groups, tmp_path):
    """probe.method=ridge on the pretrained model's features of the target texts: the head's
    input ([CLS] through BERT's pooler; GPT-2's last token), and a block's output pooled by
    the family (GPT-2: its last real token, whatever the padding), chosen on validation."""
    config = text_config(text_task[0], source_runs[family], family,
                         **{"probe.method": "ridge", "probe.groups": groups})
    summary = runs.run(config, str(tmp_path))
    assert summary["test_accuracy"] > 0.6, summary


@pytest.mark.parametrize("spec", ["gradual:every=7", "lora:r=4"])
def test_a_text_run_stopped_and_resumed_equals_the_uninterrupted_run(text_task, source_runs,
                                                                      spec, tmp_path):
    """Stopped at step 9 (mid-chunk of the length-bucketed stream, mid-phase), then resumed:
    the same final weights, bit for bit, as a run that never stopped."""
    from tests.helpers import assert_same_params, exported_params

    def config(**kw):
        return text_config(text_task[0], source_runs["bert"], "bert", freeze=spec,
                           total_steps=20, checkpoint_every=20, export_weights=True, **kw)

    whole = runs.run(config(), str(tmp_path / "whole"))
    assert runs.run(config(stop_at_step=9), str(tmp_path / "parts"))["status"] == "running"
    resumed = runs.run(config(), str(tmp_path / "parts"))
    assert resumed["final_accuracy"] == whole["final_accuracy"]
    # Step FLOPs are the mean over the length buckets the steps ran at, resumed or not.
    assert resumed["train_step_flops"] == whole["train_step_flops"]
    assert_same_params(exported_params(str(tmp_path / "parts")),
                       exported_params(str(tmp_path / "whole")), f"{spec}: stopped at 9, resumed")


def test_sentence_pair_csvs_carry_token_types_through_a_run(text_task, source_runs, tmp_path):
    """text_pair columns (MRPC/RTE style): the tokenizer's pair template gives the second
    text token type 1, the batches carry token_type_ids, and a BERT run trains on them."""
    rng = random.Random(3)
    topics = sorted(TOPICS)
    for split, n in (("train", 12), ("validation", 6), ("test", 6)):
        rows = []
        for _ in range(n):
            a, b = rng.choice(topics), rng.choice(topics)
            rows.append((_sentence(rng, a, 8), _sentence(rng, b, 8), "same" if a == b else "other"))
        _write_csv(tmp_path / f"{split}.csv", rows, ("text", "text_pair", "label"))
    config = text_config(str(tmp_path), source_runs["bert"], "bert", total_steps=6,
                         **{"data.tokenizer": os.path.join(source_runs["bert"], "tokenizer.json"),
                            "data.pad_id": 0})
    batch = next(tokens.train_batches(config.data, seed=0, global_batch=8))
    types = batch["token_type_ids"][batch["attention_mask"] > 0]
    assert set(np.unique(types)) == {0, 1}
    summary = runs.run(config, str(tmp_path / "run"))
    assert summary["status"] == "done" and summary["test_accuracy"] is not None


def test_step_flops_are_the_mean_over_the_steps_run():
    """Text steps cost what their bucket costs: a phase's step FLOPs is the mean over its
    steps (and stays exact when every step costs the same, as for images)."""
    from tljax.summary import RunRecord

    record = RunRecord()
    for flops in (10.0, 20.0, 30.0, None):
        record.add_step_flops(0, flops)
    for _ in range(7):
        record.add_step_flops(1, 0.1)
    assert record.step_flops == {"0": 20.0, "1": 0.1} and record.step_counts == {"0": 3, "1": 7}
    again = RunRecord.from_json(record.to_json())
    again.add_step_flops(0, 60.0)
    assert again.step_flops["0"] == 30.0


def test_missing_tokenizer_and_too_long_max_length_are_one_line_before_the_workdir(
        text_task, tmp_path):
    """A model folder without tokenizer.json (and no data.tokenizer), and a data.max_length
    beyond the model's position table, are refused in one line; the workdir stays empty."""
    import shutil

    data_folder, bert, _ = text_task
    bare = tmp_path / "no_tokenizer"
    shutil.copytree(bert, bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="data.tokenizer is empty and the init weights bring no "
                                        "tokenizer.json"):
        runs.run(text_config(data_folder, str(bare), "bert"), str(tmp_path / "a"))
    with pytest.raises(UserError, match="data.max_length=100 is longer than the 64 positions"):
        runs.run(text_config(data_folder, bert, "bert", **{"data.max_length": 100}),
                 str(tmp_path / "b"))
    with pytest.raises(UserError, match="model 'bert' reads text but data.name='tljax_digits' "
                                        "holds images"):
        runs.run(text_config(data_folder, bert, "bert", **{"data.name": "tljax_digits"}),
                 str(tmp_path / "c"))
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())

"""Names the model families share with code outside them."""
# The top group of every family and the module name of its classifier (the layer a transfer
# run resets). Every strategy, merge rule and regulariser uses these names.
HEAD = "head"
FINAL_NORM = "norm"  # the group of a family's norm after the last block (BiT, ViT)
POOLER = "pooler"   # BERT's tanh layer on [CLS] after the last block
TOP_OF_LAST_BLOCK = (FINAL_NORM, POOLER)  # groups that count as part of the top depth unit
# Collection/name under which every family sows the head's input (the pre-logits
# features): module.apply(..., mutable=[INTERMEDIATES]) returns it for feature probes.
INTERMEDIATES = "intermediates"
HEAD_INPUT = "head_input"


def is_classifier(path):
    """True for parameters of the classifier layer (reset on transfer, decayed to 0 by L2-SP)."""
    return path.startswith(HEAD + "/")

# Train-time regularisers: model.* config keys and module fields of the same names (off at
# eval; not architecture, so exports do not store them).
REGULARISATION = ("dropout", "attention_dropout", "drop_path")

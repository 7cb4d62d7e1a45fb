"""Names the model families share with code outside them."""
# Collection/name under which every family sows the head's input (the pre-logits
# features): module.apply(..., mutable=[INTERMEDIATES]) returns it for feature probes.
INTERMEDIATES = "intermediates"
HEAD_INPUT = "head_input"

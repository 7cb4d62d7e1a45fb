"""The three sets of a run, in this order everywhere: train (fits), validation (chooses: best
step, lr, probe hyperparameter), test (reported, never chooses). A one-tree image folder is
split into the same three names."""
SETS = ("train", "validation", "test")

"""The pretrained model as a fixed feature extractor: features (extract + cache),
classifiers (ridge, logreg, kNN), the probe run, and few-shot monitoring of training runs."""

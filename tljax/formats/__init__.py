"""Checkpoint files as arrays, below both models/ and weights/: reading .npz, .safetensors and
PyTorch files (source.py) and Keras' three formats (keras_files.py), and what every family's
converters share (convert.py: key layouts, transposes, the Detected result)."""

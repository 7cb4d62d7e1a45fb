"""What both halves of benchmarks/gpu_suite.sh share (no JAX or PyTorch imports here)."""

# NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 (1979 with sparsity); the H200 has the
# same tensor cores. An H100 PCIe is 756: pass --peak_tflops there.
PEAK_TFLOPS = 989.0

# Model GFLOPs per image at 224 px: XLA's count of tljax's step compiled for the CPU
# (`python -m benchmarks.step_cost --batch=1 --time_steps=0
# --strategies="full;linear_probe;lora:r=8"`; SGD; forward = inference pass). timm's models
# are the same architectures; its LoRA adapts the fused qkv projection where tljax's default
# adapts q and v, so the LoRA rows' MFU counts tljax's (slightly smaller) work for both.
GFLOPS_PER_IMAGE = {
    ("vit-b16", "forward"): 35.67, ("vit-b16", "full"): 106.48,
    ("vit-b16", "linear"): 35.67, ("vit-b16", "lora"): 71.83,
    ("resnet50", "forward"): 8.00, ("resnet50", "full"): 24.19,
    ("resnet50", "linear"): 8.01, ("resnet50", "lora"): 16.78,
}


def mfu(images_per_s, model, mode, peak_tflops=PEAK_TFLOPS):
    """Model-FLOPs utilisation in %, or None for a (model, mode) without a count."""
    gflops = GFLOPS_PER_IMAGE.get((model, mode))
    return None if gflops is None else round(100 * images_per_s * gflops * 1e9 / (peak_tflops * 1e12), 1)


def projected_max(fixed_bytes, per_example_bytes, capacity_bytes, multiple=32):
    """Largest batch (a multiple of `multiple`) whose step fits `capacity_bytes`, with the
    state fixed and the rest growing with the batch; None without the numbers."""
    if not (per_example_bytes and capacity_bytes) or per_example_bytes <= 0:
        return None
    return max(multiple, int((capacity_bytes - fixed_bytes) / per_example_bytes) // multiple * multiple)


def error_text(exc):
    """A failed row's one line (an out-of-memory batch or a missing kernel is a result)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def emit(result, seconds, out):
    """Prints a row as JSON and appends it to the `out` JSON-lines file when given."""
    import json

    result["seconds"] = round(seconds, 1)
    print(json.dumps(result), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(result) + "\n")

"""The peer's half of benchmarks/gpu_suite.sh: timm models trained as a PyTorch user would
make them fast (torch.compile, bf16 autocast, channels_last for the CNN, fused SGD with
momentum, LoRA from huggingface/peft), on the same synthetic batch as benchmarks/gpu_tljax.py,
one JSON row per measurement.

    python -m benchmarks.gpu_timm --out=/tmp/rows.jsonl --budget_s=200

Timing: `--steps` steps queued back to back between two CUDA syncs, after 3 warm-up steps
(the first compiles). Peak memory: torch.cuda.max_memory_allocated over the timed steps; the
largest batch is projected from it (activations scale with the batch) and then measured.
"""
import argparse
import time

from benchmarks import gpu_common

LABELS = {"vit_base_patch16_224": "vit-b16", "resnet50": "resnet50"}


def rows():
    """Most wanted first, matching gpu_tljax's order."""
    vit, cnn = "vit_base_patch16_224", "resnet50"
    return [(vit, "full", "base"), (cnn, "full", "base"), (vit, "linear", "base"),
            (vit, "forward", "base"), (vit, "lora", "base"), (cnn, "linear", "base"),
            (cnn, "forward", "base"), (vit, "full", "max"), (cnn, "full", "max")]


def build(name, mode, torch, timm):
    model = timm.create_model(name, pretrained=False, num_classes=1000).cuda()
    channels_last = name == "resnet50"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode == "linear":
        head = {id(p) for p in model.get_classifier().parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head)
    if mode == "lora":
        import peft

        config = peft.LoraConfig(r=8, lora_alpha=8, target_modules=["qkv"])
        model = peft.inject_adapter_in_model(config, model)  # in place, for non-HF models
        for path, p in model.named_parameters():  # LoRA factors and the new head train
            p.requires_grad_("lora_" in path or path.startswith("head."))
    return model, channels_last


def measure(name, mode, batch, steps, size=224):
    import timm
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model, channels_last = build(name, mode, torch, timm)
    x = torch.randn(batch, 3, size, size, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    compiled = torch.compile(model)
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return compiled(x)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        try:
            opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=True)
        except (TypeError, RuntimeError):
            opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(compiled(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    return ms, peak, resident, total


def _release(torch):
    """Frees the last row's model and compiled graphs before the next row."""
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch._dynamo.reset()


def projected_max(peak, resident, batch, total):
    """Largest batch whose step fits 90 % of the card (JAX's pool in gpu_tljax is the same
    0.9: XLA_PYTHON_CLIENT_MEM_FRACTION in gpu_suite.sh)."""
    return gpu_common.projected_max(resident, (peak - resident) / batch, 0.9 * total)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget_s", type=float, default=240)
    parser.add_argument("--out", default="")
    parser.add_argument("--peak_tflops", type=float, default=gpu_common.PEAK_TFLOPS)
    args = parser.parse_args()
    import timm
    import torch

    begin = time.monotonic()
    device = torch.cuda.get_device_name(0)
    print(f"timm {timm.__version__}, torch {torch.__version__}, {device}", flush=True)
    base, last_cost = {}, 0.0
    for name, mode, which in rows():
        elapsed = time.monotonic() - begin
        if elapsed + last_cost > args.budget_s:
            print(f"timm: time budget reached at {elapsed:.0f}s; rows left out from "
                  f"{name} {mode} {which}")
            break
        batch = args.batch
        if which == "max":
            batch = None
            if name in base:
                peak, resident, total = base[name]
                batch = projected_max(peak, resident, args.batch, total)
            if batch is None or batch <= args.batch:
                continue
        result = {"side": "timm", "model": LABELS[name], "mode": mode, "batch": batch,
                  "dtype": "bfloat16", "variant": "", "device": device}
        started = time.monotonic()
        try:
            ms, peak, resident, total = measure(name, mode, batch, args.steps)
        except Exception as e:  # noqa: BLE001  out of memory or a failed compile is a row
            result["error"] = gpu_common.error_text(e)
        else:
            if mode == "full" and which == "base":
                base[name] = (peak, resident, total)
            rate = 1000 * batch / ms
            result.update(step_ms=round(ms, 2), images_per_s=round(rate, 1),
                          peak_gib=round(peak / 2**30, 2),
                          mfu=gpu_common.mfu(rate, LABELS[name], mode, args.peak_tflops))
        _release(torch)
        last_cost = time.monotonic() - started
        gpu_common.emit(result, last_cost, args.out)


if __name__ == "__main__":
    main()

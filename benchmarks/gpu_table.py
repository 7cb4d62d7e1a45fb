"""One markdown table from the JSON rows of benchmarks/gpu_tljax.py and gpu_timm.py: a line
per (model, mode, batch, variant), tljax beside timm.

    python -m benchmarks.gpu_table rows.jsonl
"""
import json
import sys

MODE_NAMES = {"full": "full fine-tuning", "linear": "linear probe", "lora": "LoRA r=8",
              "forward": "forward only"}


def _cells(row):
    if row is None:
        return ["", "", "", ""]
    if "error" in row:
        return [row["error"][:60], "", "", ""]
    mfu = "" if row.get("mfu") is None else f"{row['mfu']:.1f}"
    peak = "" if row.get("peak_gib") is None else f"{row['peak_gib']:.1f}"
    return [f"{row['images_per_s']:.0f}", f"{row['step_ms']:.1f}", peak, mfu]


def render(rows):
    """Markdown lines; the last column is tljax's images/s over timm's at the same batch."""
    table, order = {}, []
    for row in rows:
        key = (row["model"], row["mode"], row["batch"], row.get("variant", ""))
        if key not in table:
            table[key] = {}
            order.append(key)
        table[key][row["side"]] = row
    lines = ["| model | step | batch | tljax variant | tljax compile s | tljax img/s | ms | GiB "
             "| MFU % | timm img/s | ms | GiB | MFU % | tljax / timm |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in order:
        model, mode, batch, variant = key
        ours, theirs = table[key].get("tljax"), table[key].get("timm")
        ratio = ""
        if ours and theirs and "error" not in ours and "error" not in theirs:
            ratio = f"{ours['images_per_s'] / theirs['images_per_s']:.2f}×"
        compiled = ""  # (with programs loaded from the compilation cache)
        if ours and ours.get("compile_s") is not None:
            compiled = f"{ours['compile_s']:.0f}" + (f" ({ours['cache_hits']} cached)"
                                                     if ours.get("cache_hits") else "")
        lines.append("| " + " | ".join([model, MODE_NAMES.get(mode, mode), str(batch),
                                         variant or "default", compiled, *_cells(ours),
                                         *_cells(theirs), ratio]) + " |")
    return lines


def main(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    devices = sorted({r["device"] for r in rows})
    print(f"{', '.join(devices)}; bfloat16 activations, float32 master weights; synthetic "
          f"224 px batches; SGD with momentum\n")
    print("\n".join(render(rows)))


if __name__ == "__main__":
    main(sys.argv[1])

"""The training wing: the loop (loop.py), its pure steps, the train state, optimizers,
checkpoints, the jit/pmap/fsdp paths, selection on validation and exports. Started by
tljax.runs with a run_init.Start; nothing here imports the prologue (run_init)."""

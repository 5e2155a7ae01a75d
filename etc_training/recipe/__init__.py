"""The three-stage ETC training recipe (Two Bridges, One Pathway), its evaluation and the ablation.

    config.py       TrainConfig / StageConfig / SourceConfig dataclasses, load_train_config(path, overrides)
    data.py         EpisodeStore, ActionChunkDataset, ETC / general VLM sources, samplers, StageData (mixing)
    trainer.py      StageTrainer: one stage's loop (AdamW, warm-up + cosine, EMA, clipping, resume, export)
    checkpoint.py   training checkpoints: atomic write (tmp dir, fsync, rename, `latest`), exact read, newest
    distributed.py  threads, device, seeds, torchrun process group, collectives, DDP / FSDP wrapping
    metrics.py      metrics.jsonl (+ TensorBoard), peak memory
    init_policy.py  the starting policy (out/init): preset + norm stats / FAST fitted on the action data
    stages.py       run_recipe(cfg): stage 1 -> 2 -> 3, each initialised from the previous one
    cka.py          linear CKA drift to the Stage-1 model on a fixed probe set, plots
    evaluate.py     closed-loop success in the MuJoCo world, offline ETC answer quality, offline action quality
    ablate.py       action-only vs ETC in Stage 2 vs the full recipe, several seeds, table + plots

Importing this package imports nothing heavy; torch / transformers load inside the functions that need them.
See docs/recipe.md.
"""

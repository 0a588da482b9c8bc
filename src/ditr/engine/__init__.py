"""Model-agnostic training and evaluation engine.

One job per module: ``losses`` (cross-entropy, Lovasz-softmax, the combined criterion), ``metrics``
(confusion matrix, mIoU, full-resolution mapping, test-time voting), ``optim`` (AdamW groups,
OneCycle), ``checkpoint`` (atomic training state with fallback), ``distributed`` (torchrun set-up,
sharding, DDP), ``loading`` (deterministic per-epoch order and per-sample seeds), ``evaluator``
(whole-data-set evaluation over all ranks), ``logging`` (JSONL, progress, plots) and ``trainer``
(the loop). The engine knows nothing about points or images: a model maps a batch dict to an
output dict, a criterion maps (output, batch) to named losses. See docs/training.md.
"""

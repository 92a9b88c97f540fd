"""Training models that certify: masked fine-tuning with labels (streamed data, random or greedy masks, CPU/CUDA,
torchrun, exact resume, preemption) and masked self-distillation without labels (needs the [export] extra: torch)."""

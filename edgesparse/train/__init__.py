"""Training stages: dense baseline, sparsity (tfmot), quantization (PTQ settings, QAT, PQAT)."""

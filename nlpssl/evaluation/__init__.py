"""Evaluation: STS Spearman, offline `evaluate` metrics, linear probes and kNN, perplexity."""

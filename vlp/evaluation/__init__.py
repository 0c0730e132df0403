"""Evaluation metrics shared by every objective: retrieval, zero-shot classification."""

"""Proof of Inference: score a provider's answer against a re-scoring, sign what crosses nodes, decide by majority."""

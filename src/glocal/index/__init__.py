"""Dataset-wide concept index: Relevance and Activation Maximization, class statistics, references."""

from .topk import TopK

__all__ = ["TopK"]

"""What one row of logits says about one token: its log-probability, rank and the sampler's cut-offs (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]
# Tokens more than this many nats below the best one are too unlikely to matter for a top-k cut-off; looking for
# the k-th best only among the others avoids partitioning the whole vocabulary (262,144 logits for gemma-3).
_SHORTLIST_NATS = 30.0


@dataclass(frozen=True, slots=True)
class TokenStats:
    logprob: float  # natural-log softmax of the token
    rank: int  # tokens with a strictly higher logit
    top_logprob: float
    top_k_logprob: float  # the k-th best logprob
    mass_above: float  # probability of the tokens ranked above
    top_k_mass: float  # probability of the k best tokens


def logsumexp(logits: Logits) -> float:
    peak = float(logits.max())
    return peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))


def chosen_logprob(logits: Logits, token: int) -> float:
    """One token's log-probability: the provider's per-token cost while generating (one pass over the row)."""
    return float(logits[token]) - logsumexp(logits)


def token_stats(logits: Logits, token: int, top_k: int) -> TokenStats:
    peak = float(logits.max())
    weights = np.exp(logits - peak)
    total = float(weights.sum(dtype=np.float64))
    lse = peak + float(np.log(total))
    value = logits[token]
    above = logits > value
    shortlist = logits[logits >= peak - _SHORTLIST_NATS]
    pool = shortlist if shortlist.size >= top_k else logits
    k = min(top_k, pool.size)
    best = np.partition(pool, pool.size - k)[pool.size - k :]
    return TokenStats(
        logprob=float(value) - lse,
        rank=int(np.count_nonzero(above)),
        top_logprob=peak - lse,
        top_k_logprob=float(best.min()) - lse,
        mass_above=float(weights[above].sum(dtype=np.float64)) / total,
        top_k_mass=float(np.exp(best - peak).sum(dtype=np.float64)) / total,
    )

"""What one row of logits says about one token: its log-probability, rank and the sampler's cut-offs (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]
# The k best logits are looked for among those within a widening band below the best one, not by partitioning the
# whole vocabulary (262,144 logits for gemma-3: a partition takes ≈ 2 ms, a band ≈ 0.1 ms).
_FIRST_BAND_NATS = 2.0


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
    value = float(logits[token])
    above = logits > logits[token]
    best = _best(logits, peak, top_k)
    return TokenStats(
        logprob=value - lse,
        rank=int(np.count_nonzero(above)),
        top_logprob=peak - lse,
        top_k_logprob=float(best.min()) - lse,
        mass_above=float(np.dot(weights, above)) / total,
        top_k_mass=float(np.exp(best.astype(np.float64) - peak).sum()) / total,
    )


def _best(logits: Logits, peak: float, k: int) -> Logits:
    """The k largest logits (all of them when there are fewer), in no particular order."""
    band = _FIRST_BAND_NATS
    while True:
        pool = logits[logits >= peak - band]
        if pool.size >= k or not np.isfinite(band) or pool.size == logits.size:
            break
        band = band * 4 if band < 256 else np.inf
    k = min(k, pool.size)
    return np.partition(pool, pool.size - k)[pool.size - k :]

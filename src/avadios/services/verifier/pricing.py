"""What a network request costs, in integer micro-AUTOM (pure).

A provider's profile names its price per 1,000 tokens (prompt and completion alike). Before anyone answers, the
requester holds, for each provider it asks, the most that provider could quote: `cap` = the price of an upper
bound of the prompt's tokens plus max_tokens. Afterwards a provider quotes the price of what it actually read and
wrote (`quote`), never above the cap; the settle pays each agreeing provider its quote and returns the rest.
"""

from __future__ import annotations

from avadios.v1 import inference_pb2

# Before routing the requester cannot tokenize with the provider's model: a token is at least one byte of text,
# and a chat template adds a few dozen tokens of its own.
TEMPLATE_TOKENS = 64


def prompt_token_bound(request: inference_pb2.GenerateRequest) -> int:
    """An upper bound of the request's prompt length in tokens, for any byte-level tokenizer."""
    chat = request.chat.messages if request.HasField("chat") else []
    text = "".join(m.role + m.content for m in chat) or request.prompt
    return len(text.encode("utf-8")) + TEMPLATE_TOKENS


def price_of(tokens: int, price_per_1k: int) -> int:
    """`tokens` at `price_per_1k` micro-AUTOM per 1,000 tokens, rounded up; never below 1 (a hold pays 1 or more)."""
    return max(1, -(-tokens * price_per_1k // 1000))


def cap(request: inference_pb2.GenerateRequest, max_tokens: int, price_per_1k: int) -> int:
    """The most one provider at `price_per_1k` can quote for `request`."""
    return price_of(prompt_token_bound(request) + max_tokens, price_per_1k)


def quote(usage: inference_pb2.Usage, price_per_1k: int, price_cap: int) -> int:
    """What a provider asks for the tokens it read and wrote, within the hold's cap."""
    return min(price_cap, price_of(usage.prompt_tokens + usage.completion_tokens, price_per_1k))

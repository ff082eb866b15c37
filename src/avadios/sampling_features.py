"""Which features of a generation request go beyond plain sampling, so that Proof of Inference cannot check them.

A verifier re-scores an answer against the model's raw distribution and a replay of the plain sampler (top-k,
top-p, min-p, temperature, seed). A JSON schema's grammar, penalties and logit biases change which tokens could be
chosen in ways that re-scoring does not see, and logprobs are something a network answer does not carry. Such a
request stays on the node that holds the model; the gateway, the requester and every provider refuse to send or
serve it over the network (the gateway, verifier and inference rooms all ask this one module).
"""

from __future__ import annotations

from avadios.v1 import inference_pb2


def constrained_features(sampling: inference_pb2.SamplingParams) -> list[str]:
    """The OpenAI fields a request uses beyond plain sampling, by name; empty for a plain request."""
    used: list[str] = []
    if sampling.json_schema:
        used.append("response_format/tools")
    if sampling.logprobs or sampling.top_logprobs:
        used.append("logprobs")
    if sampling.presence_penalty:
        used.append("presence_penalty")
    if sampling.frequency_penalty:
        used.append("frequency_penalty")
    if sampling.logit_bias:
        used.append("logit_bias")
    return used


def network_refusal(sampling: inference_pb2.SamplingParams) -> str:
    """Why this request cannot be answered by the network ("" when it can)."""
    used = constrained_features(sampling)
    if not used:
        return ""
    return (
        f"{', '.join(used)} cannot be verified by Proof of Inference, so a request that uses "
        f"{'it' if len(used) == 1 else 'them'} is answered only by a node that holds the model; "
        "ask this node's own models or leave the field out"
    )

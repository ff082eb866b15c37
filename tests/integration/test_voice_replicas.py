"""`avadios up --replicas voice=2`: two voice processes share the transcriptions through NATS's queue group."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.helpers import eventually, running_node
from tests.voice_support import needs_espeak, spoken, transcribe_over_http

pytestmark = needs_espeak


def test_two_voice_replicas_both_take_work(tmp_path: Path) -> None:
    with running_node(tmp_path / "home", "--replicas", "voice=2") as node:

        def served() -> dict[int, int]:
            voices = httpx.get(node.api_url + "/health").json()["services"].get("voice", [])
            return {s["replica"]: s["requests_served"] for s in voices if s["status"] == "serving"}

        eventually(lambda: len(served()) == 2, 60, "both voice replicas to serve")
        audio = spoken("Hello there.")
        # NATS's queue group spreads requests at random: ten give both replicas work but for a 1-in-512 chance
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: transcribe_over_http(node.api_url, audio), range(10)))
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        eventually(lambda: sum(served().values()) == 10, 10, "heartbeats to count the ten transcriptions")
        assert all(count > 0 for count in served().values()), served()
        status = json.loads(node.cli("status", "--json").stdout)
        assert {"voice-0", "voice-1"} <= set(status["processes"])

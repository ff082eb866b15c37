"""Reliability is earned by verified work: pings keep a peer alive but never lift a liar back over the floor."""

from __future__ import annotations

import json
from pathlib import Path

from avadios.services.discovery.peers import NEW_PEER_RELIABILITY, ReliabilityBook

FLOOR = 0.3  # the default reliability_floor


def test_one_rejection_takes_a_new_peer_under_the_floor_and_pings_do_not_lift_it(tmp_path: Path) -> None:
    book = ReliabilityBook(tmp_path / "reliability.json")
    assert book.get("liar").value == NEW_PEER_RELIABILITY
    book.verdict("liar", accepted=False, reason="claimed token not top-1 at 3 of 8 positions")
    for _ in range(100):
        book.observe("liar", answered=True)
    score = book.get("liar")
    assert score.ping > 0.99 and score.value < FLOOR
    assert (score.rejected, score.streak, score.last_reason[:7]) == (1, 0, "claimed")


def test_a_trusted_peer_survives_one_rejection_but_not_two(tmp_path: Path) -> None:
    book = ReliabilityBook(tmp_path / "reliability.json")
    for _ in range(30):
        book.observe("honest", answered=True)
        book.verdict("honest", accepted=True)
    assert book.get("honest").value > 0.9 and book.get("honest").streak == 30
    book.verdict("honest", accepted=False, reason="r")
    assert book.get("honest").value > FLOOR
    book.verdict("honest", accepted=False, reason="r")
    assert book.get("honest").value < FLOOR


def test_the_book_survives_a_restart_and_reads_the_older_format(tmp_path: Path) -> None:
    path = tmp_path / "reliability.json"
    book = ReliabilityBook(path)
    book.verdict("a", accepted=False, reason="random text")
    book.save()
    again = ReliabilityBook(path)
    assert again.get("a").work == book.get("a").work and again.get("a").last_reason == "random text"
    path.write_text(json.dumps({"b": {"value": 0.9, "ok": 3, "failed": 0, "last_seen_unix": 1}}))
    older = ReliabilityBook(path)
    assert older.get("b").ping == 0.9 and older.get("b").work == NEW_PEER_RELIABILITY

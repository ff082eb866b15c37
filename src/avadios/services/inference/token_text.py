"""Token pieces to answer text, exactly as llama-cpp-python's create_completion makes it (and a verifier checks it).

The text of an answer is the concatenation of its tokens' pieces (bytes), cut before the earliest stop string,
decoded as UTF-8 with invalid or incomplete sequences dropped. While streaming, bytes that may still become a
stop string, or that end in an incomplete character, are held back until the next piece decides.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


def first_stop(data: bytes, stops: Sequence[bytes]) -> int | None:
    """The index of the earliest stop string in `data`, or None."""
    found = [i for i in (data.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def answer_text(pieces: Sequence[bytes], stop: Sequence[str]) -> tuple[str, bool]:
    """The text of an answer made of `pieces`, and whether a stop string cut it."""
    data = b"".join(pieces)
    cut = first_stop(data, [s.encode() for s in stop])
    return data[: len(data) if cut is None else cut].decode("utf-8", errors="ignore"), cut is not None


class StopText:
    """Feeds pieces in, gives back the text that is safe to show now; `stopped` once a stop string appeared."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = [s.encode() for s in stop if s]
        self._data = b""
        self._sent = 0  # bytes of _data already passed to the decoder
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        self._data += piece
        cut = first_stop(self._data, self._stops)
        if cut is not None:
            self.stopped = True
            return self._emit(cut, final=True)
        return self._emit(len(self._data) - self._held(), final=False)

    def finish(self) -> str:
        """The rest of the text at the end of generation (nothing after a stop string)."""
        return "" if self.stopped else self._emit(len(self._data), final=True)

    def _held(self) -> int:
        """Length of the longest tail of the data that is the start of a stop string."""
        longest = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(self._data)), longest, -1):
                if self._data.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _emit(self, end: int, final: bool) -> str:
        end = max(end, self._sent)
        chunk, self._sent = self._data[self._sent : end], end
        return self._decoder.decode(chunk, final=final)

"""Speech audio out: WAV streams parsed into PCM, and PCM encoded on the fly as WAV, MP3, Ogg Opus or raw PCM.

Every encoder takes 16-bit little-endian mono PCM in pieces and returns the encoded bytes it can give so far, so
the first bytes leave as soon as the engine has spoken the first words. MP3 and Opus go through PyAV (the
FFmpeg that faster-whisper already brings; libmp3lame and libopus are in its wheels).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Protocol, cast

import av
import numpy as np
from av.audio.stream import AudioStream

from avadios.errors import InvalidArgument

FORMATS = ("wav", "mp3", "opus", "pcm")
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg", "pcm": "audio/pcm"}
# A streamed WAV's length is not known when its header leaves: 0xFFFFFFFF is what streaming servers (OpenAI's
# included) send, and players and FFmpeg read such a file to its end.
UNKNOWN_SIZE = 0xFFFFFFFF
OPUS_RATE = 48_000  # libopus takes 8, 12, 16, 24 or 48 kHz; 48 kHz is what every Opus decoder plays natively


def wav_header(sample_rate: int, data_size: int = UNKNOWN_SIZE) -> bytes:
    riff = UNKNOWN_SIZE if data_size == UNKNOWN_SIZE else 36 + data_size
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


@dataclass(slots=True)
class WavReader:
    """Splits a WAV byte stream (as espeak-ng writes to stdout) into its sample rate and PCM data. Feed it
    pieces; `sample_rate` is set once the header has passed."""

    sample_rate: int = 0
    _head: bytes = b""
    _in_data: bool = False

    def feed(self, piece: bytes) -> bytes:
        if self._in_data:
            return piece
        self._head += piece
        return self._parse()

    def _parse(self) -> bytes:
        if len(self._head) < 12:
            return b""
        if self._head[:4] != b"RIFF" or self._head[8:12] != b"WAVE":
            raise ValueError("the speech engine's output is not a WAV stream")
        pos = 12
        while len(self._head) >= pos + 8:
            kind, size = self._head[pos : pos + 4], struct.unpack("<I", self._head[pos + 4 : pos + 8])[0]
            if kind == b"data":
                self._in_data = True
                rest, self._head = self._head[pos + 8 :], b""
                return rest
            if len(self._head) < pos + 8 + size:
                return b""
            if kind == b"fmt ":
                channels, rate, bits = struct.unpack("<xxHI6xH", self._head[pos + 8 : pos + 24])
                if channels != 1 or bits != 16:
                    raise ValueError(f"the speech engine wrote {channels}-channel {bits}-bit audio, not 16-bit mono")
                self.sample_rate = rate
            pos += 8 + size + (size & 1)
        return b""


class Encoder(Protocol):
    def encode(self, pcm: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class PassThrough:
    """WAV (a header, then the PCM as it comes) or raw PCM."""

    def __init__(self, header: bytes) -> None:
        self._header = header

    def encode(self, pcm: bytes) -> bytes:
        out, self._header = self._header + pcm, b""
        return out

    def finish(self) -> bytes:
        return self.encode(b"")


class _Sink(io.RawIOBase):
    """Where the muxer writes: collects bytes until the encoder hands them on. Ogg and MP3 never seek back."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.pending += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.pending)
        self.pending.clear()
        return out


class AvEncoder:
    """MP3 (libmp3lame) or Ogg Opus (libopus) through PyAV, resampled where the codec needs another rate."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self._sink = _Sink()
        container, codec, rate = ("mp3", "libmp3lame", sample_rate) if fmt == "mp3" else ("ogg", "libopus", OPUS_RATE)
        self._container = av.open(self._sink, mode="w", format=container)
        self._stream = cast(AudioStream, self._container.add_stream(codec, rate=rate, layout="mono"))
        self._in_rate = sample_rate
        self._resampler = av.AudioResampler(format=self._stream.format.name, layout="mono", rate=rate)
        self._pts = 0
        self._carry = b""  # an odd trailing byte waits for its partner

    def encode(self, pcm: bytes) -> bytes:
        pcm, self._carry = self._carry + pcm, b""
        if len(pcm) % 2:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self._in_rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            for out in self._resampler.resample(frame):
                self._mux(out)
        return self._sink.take()

    def finish(self) -> bytes:
        for out in self._resampler.resample(None):
            self._mux(out)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()

    def _mux(self, frame: av.AudioFrame) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


def encoder_for(fmt: str, sample_rate: int) -> Encoder:
    if fmt == "wav":
        return PassThrough(wav_header(sample_rate))
    if fmt == "pcm":
        return PassThrough(b"")
    if fmt in ("mp3", "opus"):
        return AvEncoder(fmt, sample_rate)
    raise InvalidArgument(f"response_format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")

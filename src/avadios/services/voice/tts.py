"""Text to speech with the platform's own engine, picked at run time: espeak-ng (Linux; any platform that has it),
`say` (macOS), SAPI through PowerShell (Windows). Each runs as a subprocess and hands back a WAV stream.

espeak-ng writes its WAV to stdout while it speaks, so the first words leave before the last are synthesized;
`say` and SAPI only write files, so their audio leaves once the whole text is spoken. OpenAI's voice names
(alloy, echo, ...) map to distinct voices of the engine, so unchanged client code gets a sensible voice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from avadios.errors import InvalidArgument, Unavailable

READ_BYTES = 8192
DEFAULT_WPM = 175  # espeak-ng's and `say`'s own default rate: speed 1.0
# OpenAI's voices, each on a distinct espeak-ng voice (a language plus one of its !v variants).
ESPEAK_ALIASES = {
    "alloy": "en-us",
    "echo": "en-us+m3",
    "fable": "en-gb",
    "onyx": "en-us+m7",
    "nova": "en-us+f3",
    "shimmer": "en-us+f4",
    "ash": "en-us+m2",
    "ballad": "en-gb+m4",
    "coral": "en-us+f2",
    "sage": "en-us+f5",
    "verse": "en-gb+m1",
}
INSTALL_HINT = (
    "no text-to-speech engine on this machine: install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; "
    "Fedora: dnf install espeak-ng; macOS has `say`; Windows has SAPI through PowerShell)"
)


@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    language: str
    gender: str
    engine_voice: str
    is_alias: bool = False


class Engine(Protocol):
    name: str

    async def voices(self) -> list[Voice]: ...

    def default_voice(self) -> str: ...

    def resolve(self, voice: str) -> str:
        """The engine's voice for a requested name (an OpenAI alias, an engine voice, or empty)."""
        ...

    def speak(self, text: str, engine_voice: str, speed: float) -> AsyncIterator[bytes]:
        """The spoken text as a WAV byte stream."""
        ...


def _check_voice(name: str) -> str:
    # Voice names go to a subprocess as one argument; refuse anything that could read as an option or a path.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_ ().+-]{0,63}", name):
        raise InvalidArgument(f"voice {name!r} is not a voice name")
    return name


async def _run_to_stream(argv: list[str], text: str) -> AsyncIterator[bytes]:
    """Run an engine that reads the text on stdin and writes WAV to stdout; yield stdout as it comes."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(text.encode())
        await proc.stdin.drain()
        proc.stdin.close()
        while piece := await proc.stdout.read(READ_BYTES):
            yield piece
        err = await proc.stderr.read()
        if await proc.wait() != 0:
            raise Unavailable(f"{Path(argv[0]).name} failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")
    finally:
        if proc.returncode is None:  # the caller went away mid-stream: stop speaking
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _run_to_file(
    argv: list[str], text: str, out: Path, env: dict[str, str] | None = None
) -> AsyncIterator[bytes]:
    """Run an engine that can only write a file; then stream the file."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        _, err = await proc.communicate(text.encode())
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    data = await asyncio.to_thread(_read_or_empty, out) if proc.returncode == 0 else b""
    if not data:
        raise Unavailable(f"{Path(argv[0]).name} failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")
    for start in range(0, len(data), READ_BYTES):
        yield data[start : start + READ_BYTES]


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


class Espeak:
    name = "espeak-ng"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._voices: list[Voice] | None = None

    async def voices(self) -> list[Voice]:
        if self._voices is None:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "--voices", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            out, _ = await proc.communicate()
            self._voices = parse_espeak_voices(out.decode(errors="replace"))
        return [*(Voice(a, "en", _gender(v), v, True) for a, v in ESPEAK_ALIASES.items()), *self._voices]

    def default_voice(self) -> str:
        return ESPEAK_ALIASES["alloy"]

    def resolve(self, voice: str) -> str:
        return ESPEAK_ALIASES.get(voice.lower(), _check_voice(voice)) if voice else self.default_voice()

    def speak(self, text: str, engine_voice: str, speed: float) -> AsyncIterator[bytes]:
        # espeak-ng speaks 80..450 words a minute; faster or slower speeds are held to that range.
        wpm = max(80, min(450, round(DEFAULT_WPM * speed)))
        return _run_to_stream([self.binary, "--stdout", "-v", engine_voice, "-s", str(wpm)], text)


def _gender(engine_voice: str) -> str:
    variant = engine_voice.partition("+")[2]
    return {"f": "female", "m": "male"}.get(variant[:1], "male")


def parse_espeak_voices(listing: str) -> list[Voice]:
    """`espeak-ng --voices` lines: Pty Language Age/Gender VoiceName File Other. MBROLA voices (mb/...) need
    MBROLA's own data, which the engine does not ship, so they are left out."""
    voices: dict[str, Voice] = {}
    for line in listing.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or parts[4].startswith("mb/"):
            continue
        language, gender = parts[1], parts[2].rpartition("/")[2]
        voices.setdefault(language, Voice(language, language, {"M": "male", "F": "female"}.get(gender, ""), language))
    return sorted(voices.values(), key=lambda v: v.name)


class MacSay:
    name = "say"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    async def voices(self) -> list[Voice]:
        proc = await asyncio.create_subprocess_exec(self.binary, "-v", "?", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        found = []
        for line in out.decode(errors="replace").splitlines():
            match = re.match(r"(.+?)\s+([a-z]{2}[_-][A-Za-z0-9]+)\s+#", line)
            if match:
                found.append(Voice(match[1].strip(), match[2], "", match[1].strip()))
        return found

    def default_voice(self) -> str:
        return ""  # the system's own default voice

    def resolve(self, voice: str) -> str:
        # OpenAI's names mean "the default voice": macOS voice sets differ from machine to machine.
        return "" if not voice or voice.lower() in ESPEAK_ALIASES else _check_voice(voice)

    async def speak(self, text: str, engine_voice: str, speed: float) -> AsyncIterator[bytes]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"
            argv = [self.binary, "-r", str(round(DEFAULT_WPM * speed)), "--file-format=WAVE"]
            argv += ["--data-format=LEI16@22050", "-o", str(out), "-f", "-"]
            if engine_voice:
                argv += ["-v", engine_voice]
            async for piece in _run_to_file(argv, text, out):
                yield piece


SAPI_SCRIPT = (
    "Add-Type -AssemblyName System.Speech; $s = New-Object System.Speech.Synthesis.SpeechSynthesizer; "
    "if ($env:AVADIOS_SAPI_VOICE) { $s.SelectVoice($env:AVADIOS_SAPI_VOICE) }; $s.Rate = [int]$env:AVADIOS_SAPI_RATE; "
    "$f = New-Object System.Speech.AudioFormat.SpeechAudioFormatInfo(22050, 16, 1); "
    "$s.SetOutputToWaveFile($env:AVADIOS_SAPI_OUT, $f); $s.Speak([Console]::In.ReadToEnd()); $s.Dispose()"
)


class Sapi:
    """Windows SAPI through PowerShell's System.Speech; the voice, rate and file travel in the environment, so
    no text or name is ever spliced into the script."""

    name = "sapi"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    async def voices(self) -> list[Voice]:
        script = (
            "Add-Type -AssemblyName System.Speech; (New-Object System.Speech.Synthesis.SpeechSynthesizer)"
            ".GetInstalledVoices() | % { $_.VoiceInfo.Name + '|' + $_.VoiceInfo.Culture + '|' + $_.VoiceInfo.Gender }"
        )
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-NoProfile", "-Command", script, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        rows = [line.strip().split("|") for line in out.decode(errors="replace").splitlines() if "|" in line]
        return [Voice(r[0], r[1], r[2].lower(), r[0]) for r in rows if len(r) == 3]

    def default_voice(self) -> str:
        return ""

    def resolve(self, voice: str) -> str:
        return "" if not voice or voice.lower() in ESPEAK_ALIASES else _check_voice(voice)

    async def speak(self, text: str, engine_voice: str, speed: float) -> AsyncIterator[bytes]:
        rate = max(-10, min(10, round(math.log2(speed) * 5)))  # SAPI's -10..10, about double speed at +5
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"
            env = {
                **os.environ,
                "AVADIOS_SAPI_VOICE": engine_voice,
                "AVADIOS_SAPI_RATE": str(rate),
                "AVADIOS_SAPI_OUT": str(out),
            }
            async for piece in _run_to_file([self.binary, "-NoProfile", "-Command", SAPI_SCRIPT], text, out, env):
                yield piece


def pick_engine(system: str | None = None) -> Engine | None:
    """The native engine of this platform, or None where it has none (then speech answers UNAVAILABLE)."""
    system = system or platform.system()
    if system == "Darwin" and (say := shutil.which("say")):
        return MacSay(say)
    if system == "Windows" and (ps := shutil.which("powershell") or shutil.which("pwsh")):
        return Sapi(ps)
    if espeak := shutil.which("espeak-ng"):
        return Espeak(espeak)
    return None

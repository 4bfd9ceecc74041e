"""`dicom-node config check FILE` as a subprocess: exit 0 when valid, one line per problem naming the key;
the config as frozen, validated objects (built from a file or in code), and the retry policy of each consumer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, write_config
from pydantic import ValidationError

from dicom_node.config import Config, Destination, NodeConfig, parse_config
from dicom_node.errors import ConfigError
from dicom_node.ml.rules import Orientation, SeriesRule
from dicom_node.runtime.retry import RetryPolicy
from dicom_node.validation import problems

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOM_NODE), "config", "check", str(path)], check=False, capture_output=True, text=True, timeout=60
    )


def test_default_config_is_valid(tmp_path: Path) -> None:
    # a copy beside the shipped models so relative paths resolve the same way, without touching the repo
    shutil.copy(REPO / "config.toml", tmp_path / "config.toml")
    (tmp_path / "models").symlink_to(REPO / "models")
    result = _check(tmp_path / "config.toml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "DICOMNODE" in result.stdout


@pytest.mark.parametrize(
    ("sections", "key", "words"),
    [
        ({"node": {"ae_title": "WAY-TOO-LONG-AE-TITLE"}}, "node.ae_title", "not a valid AE title"),
        ({"node": {"ae_title": "BAD\\AE"}}, "node.ae_title", "not a valid AE title"),
        ({"node": {"colour": "blue"}}, "node.colour", "unknown key"),
        ({"storage": {"min_free": 10}}, "storage.min_free", "unknown key"),
        ({"node": {"port": 70000}}, "node.port", "out of range"),
        ({"callers": [{"ae_title": "PACS", "host": "not-an-ip"}]}, "callers[0].host", "not an IP address"),
    ],
)
def test_each_problem_names_its_key(tmp_path: Path, sections: dict, key: str, words: str) -> None:
    result = _check(write_config(tmp_path, **sections))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if key in line]
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


def test_unwritable_storage_path_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # a folder cannot be created under a file (holds for root too, unlike permission bits)
    result = _check(write_config(tmp_path, storage={"path": str(blocker / "store")}))
    assert result.returncode != 0
    assert any(line.count("storage.path") == 1 and "cannot be created" in line for line in result.stderr.splitlines())


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    result = _check(write_config(tmp_path, node={"ae_title": "", "port": 0, "bogus": 1}))
    assert result.returncode != 0
    for key in ("node.ae_title", "node.port", "node.bogus"):
        assert key in result.stderr, result.stderr


# -- the config as validated objects ---------------------------------------------------------------------

def _parse(tmp_path: Path, **sections: object) -> Config:
    data = {"storage": {"path": str(tmp_path / "store")}, "models": {"path": str(REPO / "models")},
            "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"}, **sections}
    return parse_config(data, tmp_path)


def _problems(tmp_path: Path, **sections: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _parse(tmp_path, **sections)
    return err.value.problems


def test_unknown_key_is_refused_with_its_location(tmp_path: Path) -> None:
    found = _problems(tmp_path, destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104,
                                               "tls": {"enabled": False, "bogus": 1}}],
                      delivery={"retry": {"initial_delay": 1}})
    assert "destinations[0].tls.bogus: unknown key" in found, found
    assert "delivery.retry.initial_delay: unknown key" in found, found


def test_wrong_type_is_refused_with_its_location(tmp_path: Path) -> None:
    found = _problems(tmp_path, worker={"retry": {"factor": "fast"}}, node={"max_pdu": True},
                      models={"path": str(REPO / "models"), "enabled": [{"name": "ich", "version": "1",
                                                                        "thresholds": {"any": "high"}}]})
    assert "worker.retry.factor: expected a number, got str" in found, found
    assert "node.max_pdu: expected an integer, got bool" in found, found
    assert any(p.startswith("models.enabled[0].thresholds.any: must be a number between 0 and 1") for p in found)


def test_building_config_objects_in_code_validates_them(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        NodeConfig(port=70000)
    assert problems(err.value) == ["port: port 70000 out of range 1-65535"]
    with pytest.raises(ValidationError, match="unknown key|Extra inputs"):
        Config(storage={"path": str(tmp_path / "store")}, models={"path": str(REPO / "models")}, nodes={})
    with pytest.raises(ValidationError):
        Destination(name="pacs", ae_title="BAD\\AE", host="h", port=104)
    with pytest.raises(ValidationError):
        RetryPolicy(initial_delay_seconds=-1)
    with pytest.raises(ValidationError):  # a replaced section is validated again
        _parse(tmp_path).worker.replace(device="gpu")
    built = Config(storage={"path": str(tmp_path / "store")}, models={"path": str(REPO / "models")})
    assert built.storage.quarantine == tmp_path / "quarantine"  # the default beside `path`


def test_config_is_immutable(tmp_path: Path) -> None:
    config = _parse(tmp_path, models={"path": str(REPO / "models"), "enabled": [
        {"name": "ich", "version": "1", "thresholds": {"any": 0.5}, "rules": {"series": {"min_images": 3}}}]})
    with pytest.raises(ValidationError):
        config.node.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.models.enabled[0].thresholds["any"] = 0.9  # type: ignore[index]
    with pytest.raises(TypeError):
        config.models.enabled[0].rules["series"]["min_images"] = 1  # type: ignore[index]
    assert isinstance(config.callers, tuple) and isinstance(config.models.enabled, tuple)


def test_series_rule_option_typo_is_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError) as err:
        SeriesRule(label="axial CT", modalities=("CT",), contrast="presnt")  # type: ignore[arg-type]
    assert problems(err.value) == ["contrast: must be one of absent, present, any, got 'presnt'"]
    rule = SeriesRule(label="axial CT", modalities=("ct",), orientation="axial")  # type: ignore[arg-type]
    assert rule.orientation is Orientation.AXIAL and rule.modalities == ("CT",)
    with pytest.raises(ValidationError, match="orientation"):
        rule.replace(orientation="axail")


def test_each_consumer_has_its_retry_policy_with_todays_defaults(tmp_path: Path) -> None:
    config = _parse(tmp_path)
    assert config.worker.retry == RetryPolicy(max_attempts=3, initial_delay_seconds=5, max_age_seconds=0)
    assert config.delivery.retry == RetryPolicy(initial_delay_seconds=2, max_delay_seconds=300, max_age_seconds=259200)
    assert config.notify_retry == config.delivery.retry  # alerts follow [delivery] unless [notifications.retry]
    # the keys older config files use still set the policies
    old = _parse(tmp_path, worker={"max_attempts": 4},
                 delivery={"initial_backoff_seconds": 1, "max_backoff_seconds": 9, "max_age_seconds": 60})
    assert old.worker.max_attempts == old.worker.retry.max_attempts == 4
    assert (old.delivery.retry.initial_delay_seconds, old.delivery.retry.max_delay_seconds,
            old.delivery.retry.max_age_seconds) == (1, 9, 60)
    assert any(p.startswith("delivery: initial_backoff_seconds and retry.initial_delay_seconds both set")
               for p in _problems(tmp_path, delivery={"initial_backoff_seconds": 1,
                                                      "retry": {"initial_delay_seconds": 2}}))


def test_configured_retry_delays_are_what_the_consumers_use(tmp_path: Path) -> None:
    from test_sender import add_outputs

    from dicom_node.db.engine import Database, utcnow
    from dicom_node.db.schema import Delivery, Job, JobState
    from dicom_node.delivery import state
    from dicom_node.jobs import queue as jobs

    config = _parse(tmp_path, destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
                    worker={"retry": {"initial_delay_seconds": 40, "factor": 1}},
                    delivery={"retry": {"initial_delay_seconds": 70, "max_attempts": 2}},
                    notifications={"retry": {"initial_delay_seconds": 11}})
    assert config.notify_retry.initial_delay_seconds == 11 and config.notify_retry.max_age_seconds == 259200
    db = Database(config.database_url)
    try:
        add_outputs(db, config, 1)
        for expected_state in ("pending", "failed"):  # the second failed try reaches max_attempts = 2
            with db.write() as s:
                s.execute(Delivery.__table__.update().values(next_attempt_at=utcnow()))
                (due,) = state.claim_due(s, "me", 60, utcnow())
                now = utcnow()
                state.mark_attempt_failed(s, config.delivery.retry, due.delivery_id, "down", now, "me")
            with db.read() as s:
                row = s.get(Delivery, due.delivery_id)
                assert row is not None and row.state.value == expected_state
                if expected_state == "pending":
                    assert abs((row.next_attempt_at - now).total_seconds() - 70) < 1
        with db.write() as s:
            s.execute(Job.__table__.update().values(state=JobState.QUEUED, run_after=utcnow(), max_attempts=3))
        job = jobs.claim(db, "w", 30)
        assert job is not None
        before = utcnow()
        assert jobs.fail_attempt(db, job.id, "w", "boom", False, config.worker.retry) == JobState.QUEUED
        with db.read() as s:
            queued = s.get(Job, job.id)
            assert queued is not None and 39 <= (queued.run_after - before).total_seconds() <= 41
    finally:
        db.dispose()

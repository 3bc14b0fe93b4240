"""The worker refuses settings under which a task could be delivered twice."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker_service.settings import WorkerSettings


def test_visibility_timeout_must_exceed_the_longest_unacked_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "300")
    monkeypatch.setenv("EMAIL_RETRY_MAX_DELAY", "250")
    monkeypatch.setenv("TASK_TIME_LIMIT", "60")
    with pytest.raises(ValidationError, match=r"must exceed EMAIL_RETRY_MAX_DELAY \+ TASK_TIME"):
        WorkerSettings()
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "311")
    assert WorkerSettings().celery_visibility_timeout == 311


def test_defaults_are_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELERY_VISIBILITY_TIMEOUT", "EMAIL_RETRY_MAX_DELAY", "TASK_TIME_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    settings = WorkerSettings()
    assert settings.celery_visibility_timeout > (
        settings.email_retry_max_delay + settings.task_time_limit
    )


def test_rediss_urls_verify_certificates_unless_told_otherwise() -> None:
    from shared_schemas.settings import CommonSettings, verify_tls_by_default

    assert verify_tls_by_default("redis://h:6379/0") == "redis://h:6379/0"
    assert (
        verify_tls_by_default("rediss://:pw@h:6380/0")
        == "rediss://:pw@h:6380/0?ssl_cert_reqs=required"
    )
    explicit = "rediss://h:6380/0?ssl_cert_reqs=none"
    assert verify_tls_by_default(explicit) == explicit
    settings = CommonSettings(celery_broker_url="rediss://h:6380/0?ssl_ca_certs=/ca.pem")
    assert settings.celery_broker_url.endswith("ssl_ca_certs=%2Fca.pem&ssl_cert_reqs=required")


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    from api_service.settings import ApiSettings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    names = set(ApiSettings.model_fields) | set(WorkerSettings.model_fields)
    missing = sorted(n.upper() for n in names if f"`{n.upper()}`" not in readme)
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_shipped_worker_sends_task_events_from_its_start() -> None:
    # Without them Flower sees nothing of a worker until someone enables events remotely.
    from worker_service.celery_app import make_celery

    conf = make_celery(WorkerSettings()).conf
    assert conf.worker_send_task_events is True


def test_metrics_listen_on_every_interface_unless_an_address_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shipped containers are scraped from outside; make run binds 127.0.0.1.
    monkeypatch.delenv("WORKER_METRICS_ADDR", raising=False)
    assert str(WorkerSettings().worker_metrics_addr) == "0.0.0.0"
    for address in ("127.0.0.1", "::1"):
        monkeypatch.setenv("WORKER_METRICS_ADDR", address)
        assert str(WorkerSettings().worker_metrics_addr) == address
    monkeypatch.setenv("WORKER_METRICS_ADDR", "127.0.0.1:9808")
    with pytest.raises(ValidationError, match="worker_metrics_addr"):
        WorkerSettings()

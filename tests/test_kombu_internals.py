"""The private names of kombu (and Celery) that the broker transports rely on.

Both services subclass kombu's Redis transport (worker_service.broker_transport,
api_service.broker_transport) and override or call names kombu does not document. The
dependencies are pinned below their next minor release; this test says exactly which
name moved when an upgrade is tried (docs/design.md, "Reaching past kombu").
"""

from __future__ import annotations

import inspect

import pytest
from celery.app.task import Context, Task
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

WORKER_CHANNEL_NAMES = [
    # The consumer's fetch: what MultiChannelPoller sends and reads on the BRPOP socket.
    "_brpop_start",
    "_brpop_read",
    "_flush_brpop_reauth",
    "_in_poll",
    "_q_for_pri",
    "priority_steps",
    "_get_message_priority",
    "sep",
    # One client per channel.
    "conn_or_acquire",
    "_create_client",
    "_pool",
    "pool",
    "_put",
    "global_keyprefix",
]
API_CHANNEL_NAMES = ["_put", "basic_publish", "create_publish_batch", "supports_batch_publish"]


@pytest.mark.parametrize("name", sorted(set(WORKER_CHANNEL_NAMES + API_CHANNEL_NAMES)))
def test_kombus_redis_channel_still_has(name: str) -> None:
    assert hasattr(kombu_redis.Channel, name), (
        f"kombu.transport.redis.Channel no longer has {name!r}: the broker transports "
        "(worker_service/api_service broker_transport.py) override or call it; read the "
        "new kombu's Redis transport and port them before raising the pin"
    )


def test_the_poller_still_starts_and_reads_fetches_through_the_channel() -> None:
    register = inspect.getsource(kombu_redis.MultiChannelPoller._register_BRPOP)
    assert "_brpop_start" in register, "MultiChannelPoller no longer calls _brpop_start"
    handlers = inspect.getsource(kombu_redis.Channel.__init__)
    assert "_brpop_read" in handlers, "Channel's BRPOP handler is no longer _brpop_read"
    put = inspect.signature(kombu_redis.Channel._put)
    assert list(put.parameters)[:3] == ["self", "queue", "message"], put


def test_the_unacked_bookkeeping_is_where_the_fetch_script_writes_it() -> None:
    for name in ("unacked_key", "unacked_index_key", "append", "ack", "restore_by_tag"):
        assert hasattr(kombu_redis.QoS, name), f"kombu's Redis QoS no longer has {name!r}"
    # The script records a message as QoS.append does: [payload, exchange, routing key].
    append = inspect.getsource(kombu_redis.QoS.append)
    assert "dumps([message._raw, EX, RK])" in append, (
        "kombu's QoS.append records unacked messages differently now: the fetch script "
        "in worker_service/broker_transport.py writes them the old way"
    )
    assert hasattr(virtual.QoS, "append")


def test_celery_still_rebuilds_a_request_as_a_signature() -> None:
    # ContractTask.defer puts a task back as it is, retries unchanged.
    assert "as_execution_options" in inspect.getsource(Task.signature_from_request)
    assert "'retries': self.retries" in inspect.getsource(Context.as_execution_options), (
        "Celery's signature_from_request no longer keeps the retry count"
    )

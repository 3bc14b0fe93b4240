"""A burst of concurrent submissions is delivered completely, each mail exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import API_KEY, Stack
from tests.procs import wait_for

pytestmark = pytest.mark.integration

BURST = 120


async def _submit_all(base_url: str, subjects: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/send-email",
                    json={"to": f"burst{i}@example.com", "subject": subject, "body": str(i)},
                )
                for i, subject in enumerate(subjects)
            )
        )


def test_burst_of_concurrent_submissions_each_delivered_once(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    subjects = [f"burst {run} {i}" for i in range(BURST)]
    responses = asyncio.run(_submit_all(stack.base_url, subjects))
    assert [r.status_code for r in responses] == [202] * BURST
    task_ids = [r.json()["task_id"] for r in responses]
    assert len(set(task_ids)) == BURST

    wanted = set(subjects)

    def ours() -> list[str]:
        return [
            str(m.message["Subject"])
            for m in stack.smtp.messages()
            if m.message["Subject"] in wanted
        ]

    wait_for(lambda: len(set(ours())) == BURST, timeout=120, what=f"{BURST} burst mails")
    with stack.client() as client:
        statuses = [client.get(f"/task-status/{tid}").json()["status"] for tid in task_ids]
    assert Counter(statuses) == {"SUCCESS": BURST}
    # Every task has finished, so no copy can still be on its way.
    copies = Counter(ours())
    assert set(copies.values()) == {1}, copies.most_common(3)

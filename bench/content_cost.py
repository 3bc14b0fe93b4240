"""What content costs per mail: a 10 MB attachment through the queue, a template's rendering.

    python -m bench.content_cost             # part of make bench; ~30 s
    python -m bench.content_cost --smoke     # one large mail, a few hundred renders

**Large mails.** A real redis-server and the API under uvicorn, with no worker, so what
is queued stays: it posts plain mails, mails with one 100 KiB attachment and mails with
one 10 MiB attachment, and reports for each kind the POST's wall time (loopback, the
upload included), the API's and Redis's CPU per mail, Redis's ``used_memory`` growth
per queued mail (message, record and stored attachments together), the queue entry's
size and the stored attachments' key (``MEMORY USAGE``; docs/design.md, "Attachments,
inline images and headers").

**Templates.** In process: ``Renderer.prepare`` (sandboxed Jinja2, compiled once per
version, then the rendered mail validated again) against a store held in memory, so the
figure is the rendering's CPU alone; fetching the template is one Redis read more, which
the submission's two round trips already dwarf.

Writes <out>/content.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from api_service.template_rendering import Renderer
from bench.procs import Proc, cpu_seconds, start_redis, start_uvicorn
from shared_schemas.content import MAX_ATTACHMENTS_BYTES
from shared_schemas.email import SendEmailRequest
from shared_schemas.stored_content import content_key
from shared_schemas.tasks import EMAIL_QUEUE
from shared_schemas.templates import StoredTemplate

API_KEY = "bench-key"
PLAIN: dict[str, Any] = {"to": "alice@example.com", "subject": "Bench", "body": "Hello. " * 10}


def _mail_with_file(size: int) -> dict[str, Any]:
    # Random bytes: what compresses nowhere (a PDF, an image) is what a mail carries.
    data = os.urandom(size)
    return {
        **PLAIN,
        "attachments": [{"filename": "big.bin", "content": base64.b64encode(data).decode()}],
    }


def measure_queue(mails: int, large: int, log_dir: Path) -> dict[str, Any]:
    redis_proc, port = start_redis(log_dir)
    env = {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/0",
        "API_KEYS": API_KEY,
        "LOG_LEVEL": "WARNING",
    }
    api, base_url = start_uvicorn("api", "api_service.main:app", env, log_dir)
    client = redis.Redis(port=port)
    try:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        results: dict[str, Any] = {}
        kinds = [
            ("plain", PLAIN, mails),
            ("attachment_100kib", _mail_with_file(100 * 1024), mails),
            ("attachment_10mib", _mail_with_file(MAX_ATTACHMENTS_BYTES), large),
        ]
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            for name, mail, count in kinds:
                body = json.dumps(mail).encode()
                results[name] = _post_many(http, client, (api, redis_proc), body, count)
                results[name]["request_bytes"] = len(body)
        return results
    finally:
        client.close()
        api.stop()
        redis_proc.stop()


def _post_many(
    http: httpx.Client, client: redis.Redis, procs: tuple[Proc, Proc], body: bytes, count: int
) -> dict[str, Any]:
    api, redis_proc = procs
    client.flushdb()
    http.post("/send-email", content=body).raise_for_status()  # warm-up, not counted
    before = int(client.info("memory")["used_memory"])
    cpu = cpu_seconds(api.pid), cpu_seconds(redis_proc.pid)
    walls: list[float] = []
    task_id = ""
    for _ in range(count):
        start = time.perf_counter()
        response = http.post("/send-email", content=body)
        walls.append(time.perf_counter() - start)
        response.raise_for_status()
        task_id = response.json()["task_id"]
    api_cpu = cpu_seconds(api.pid) - cpu[0]
    redis_cpu = cpu_seconds(redis_proc.pid) - cpu[1]
    grown = int(client.info("memory")["used_memory"]) - before
    entry = client.lindex(EMAIL_QUEUE, 0)
    assert isinstance(entry, bytes)
    stored = client.memory_usage(content_key(task_id), samples=0)
    return {
        "mails": count,
        "post_ms_median": round(statistics.median(walls) * 1000, 2),
        "post_ms_max": round(max(walls) * 1000, 2),
        "api_cpu_ms_per_mail": round(api_cpu / count * 1000, 2),
        "redis_cpu_ms_per_mail": round(redis_cpu / count * 1000, 2),
        "redis_bytes_per_mail": grown // count,
        "queue_entry_bytes": len(entry),
        "stored_key_bytes": stored or 0,
    }


class _MemoryStore:
    def __init__(self, template: StoredTemplate) -> None:
        self._template = template

    async def get(self, owner: str, name: str) -> StoredTemplate | None:
        return self._template


def measure_rendering(renders: int) -> dict[str, Any]:
    template = StoredTemplate(
        name="receipt",
        version=1,
        updated_at=datetime.now(UTC),
        subject="Your receipt {{ order.id }}, {{ name }}",
        text="Hello {{ name }},\n\n{% for item in order.lines %}- {{ item.title }}: "
        "{{ item.price }}\n{% endfor %}\nTotal: {{ order.total }}\n",
        html="<p>Hello {{ name }},</p><ul>{% for item in order.lines %}<li>{{ item.title }}"
        ": {{ item.price }}</li>{% endfor %}</ul><p>Total: <b>{{ order.total }}</b></p>",
    )
    variables = {
        "name": "Alice <alice@example.com>",
        "order": {
            "id": "A-1042",
            "total": "42.00 EUR",
            "lines": [{"title": f"Item {i}", "price": "8.40 EUR"} for i in range(5)],
        },
    }
    renderer = Renderer(_MemoryStore(template))  # type: ignore[arg-type]
    templated = SendEmailRequest.model_validate(
        {"to": "alice@example.com", "template": {"name": "receipt", "variables": variables}}
    )

    async def run() -> float:
        await renderer.prepare("owner", templated)  # compiles once
        start = time.perf_counter()
        for _ in range(renders):
            await renderer.prepare("owner", templated)
        return (time.perf_counter() - start) / renders

    per_mail = asyncio.run(run())
    # The same mail's validation alone, for scale: what every submission already pays.
    raw = json.dumps({**PLAIN, "html": "<p>Hello</p>"})
    start = time.perf_counter()
    for _ in range(renders):
        SendEmailRequest.model_validate_json(raw)
    validation = (time.perf_counter() - start) / renders
    return {
        "renders": renders,
        "render_us_per_mail": round(per_mail * 1e6, 1),
        "plain_validation_us_per_mail": round(validation * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny and untimed: checks it works")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-content-") as tmp:
        queue = measure_queue(5 if args.smoke else 50, 1 if args.smoke else 5, Path(tmp))
    rendering = measure_rendering(200 if args.smoke else 5000)
    results = {"queue": queue, "templates": rendering}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "content.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

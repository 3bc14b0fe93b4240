"""The HTTP floor: the same uvicorn and FastAPI serving a constant JSON answer.

``POST /send-email`` ignores its body (it is not even read), so the load generator
sends exactly what it sends to the real API and only the work behind it differs.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="Constant endpoint")

_ANSWER = {"task_id": "00000000-0000-0000-0000-000000000000", "status": "PENDING"}


@app.post("/send-email", status_code=202)
async def send_email() -> dict[str, str]:
    return _ANSWER


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

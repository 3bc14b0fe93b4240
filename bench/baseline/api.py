"""The tutorial's ``main.py``: ``uvicorn bench.baseline.api:app``."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI
from pydantic import BaseModel, EmailStr

from bench.baseline.celery_app import TASK_NAME, celery_app

app = FastAPI(title="Tutorial baseline")


class Email(BaseModel):
    to: list[EmailStr]
    subject: str
    body: str


@app.post("/send-email", status_code=202)
async def send_email(email: Email) -> dict[str, str]:
    # Blocking I/O inside ``async def``: the event loop waits for Redis on every call.
    task = celery_app.send_task(TASK_NAME, kwargs=email.model_dump())
    return {"task_id": task.id, "status": "PENDING"}


@app.get("/task-status/{task_id}")
async def task_status(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery_app)
    return {
        "task_id": task_id,
        "status": result.status,
        "result": result.result if result.successful() else None,
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

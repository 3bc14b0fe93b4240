"""The pattern most FastAPI + Celery tutorials publish, kept as the benchmark's baseline.

Deliberately naive, and deliberately left so: an ``async def`` endpoint that calls the
blocking ``send_task`` on the event loop, status through ``AsyncResult``, one
module-level Celery app with Redis as broker and result backend, and a task that does
nothing. Do not "fix" it; it is the yardstick.
"""

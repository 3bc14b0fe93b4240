"""The routes' dependencies, as ``Annotated`` types: who calls, and what the app opened."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api_service.auth import BearerKey
from api_service.services import Services


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# async def, like every dependency here: a plain def would run in the thread pool.
ServicesDep = Annotated[Services, Depends(_services)]
# The fingerprint of the caller's API key (never the key), or a 401.
CurrentCaller = Annotated[str, Depends(BearerKey())]

"""The operator's admin API (interface §7), guarded by the admin token."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from auction.auth import check_admin
from auction.budgets import Period
from auction.operator import Operator
from clearing.types import ApiName

Money = str | int | float
Name = Annotated[str, Field(min_length=1, max_length=64)]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    budget_usd: Money
    period: Period = "total"


class NewBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: Money
    period: Period | None = None


class NewProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    api: ApiName
    base_url: str = Field(max_length=2048)
    api_key: str | None = None


def admin_router(operator: Operator, admin_token: SecretStr | None) -> APIRouter:
    """The admin routes; every one answers 401 unless the caller has the admin token."""

    class AdminRoute(APIRoute):
        """Checks the token before FastAPI reads the body: a caller without it learns nothing
        about the body's shape (a dependency would run only after the body was parsed)."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                check_admin(admin_token, request.headers.get("authorization"))
                return await handler(request)

            return guarded

    router = APIRouter(prefix="/v1/admin", route_class=AdminRoute)

    @router.post("/keys")
    async def create_key(body: NewKey) -> dict[str, object]:
        return await operator.create_key(body.name, body.budget_usd, body.period)

    @router.get("/keys")
    async def list_keys() -> dict[str, object]:
        return await operator.list_keys()

    @router.post("/keys/{name}/revoke")
    async def revoke_key(name: Name) -> dict[str, object]:
        return await operator.revoke_key(name)

    @router.post("/keys/{name}/budget")
    async def set_budget(name: Name, body: NewBudget) -> dict[str, object]:
        return await operator.set_budget(name, body.budget_usd, body.period)

    @router.post("/providers")
    async def add_provider(body: NewProvider) -> dict[str, object]:
        return await operator.add_provider(body.name, body.api, body.base_url, body.api_key)

    @router.get("/providers")
    async def list_providers() -> dict[str, object]:
        return await operator.list_providers()

    @router.delete("/providers/{name}")
    async def remove_provider(name: Name) -> dict[str, object]:
        return await operator.remove_provider(name)

    return router

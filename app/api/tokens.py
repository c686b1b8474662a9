"""API tokens over HTTP: create (the key is in that answer only), list, disable, delete.

As in the admin, a token acts as its user, so a user manages only their own tokens and superusers
any. Creating needs ``switchyard_auth.add_token`` (a leaked key must not mint keys that outlive
it); disabling and deleting one's own need nothing more. Somebody else's token answers 404 like a
missing one. Disabling or deleting a token announces it (app/broker/signals.py): its open sockets
close with 4401 in every process.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from app.api.auth import AUTHENTICATION_REQUIRED, request_user
from app.api.examples import responses
from app.api.pagination import PageOut, PageParams, keyset_page
from app.auth.models import Token
from app.auth.services import create_token

router = Router(tags=["tokens"])

ADD_TOKEN = "switchyard_auth.add_token"


class TokenOut(Schema):
    id: int
    prefix: str = Field(description="the key's first 8 characters, to tell tokens apart")
    user: str
    comment: str
    enabled: bool
    created_at: datetime


class NewTokenOut(TokenOut):
    key: str = Field(description="the secret: shown in this answer only, stored as its sha256 hash")


class TokenPage(PageOut):
    items: list[TokenOut]


class TokenFilter(PageParams):
    user: str | None = Field(None, description="a username (superusers; others see only their own tokens)")
    enabled: bool | None = None


class TokenIn(Schema):
    comment: str = Field("", max_length=255)
    user: str | None = Field(None, description="whose token (superusers only); default: yours")


TOKEN_EXAMPLE = {"id": 12, "prefix": "Xk3v9QaB", "user": "alice", "comment": "sensor gateway",
                 "enabled": True, "created_at": "2025-05-01T12:00:00Z"}


def token_out(token: Token) -> TokenOut:
    return TokenOut(id=token.pk, prefix=token.prefix, user=token.user.get_username(), comment=token.comment,
                    enabled=token.enabled, created_at=token.created_at)


def _caller(user: Any) -> Any:
    if not user.is_authenticated:
        raise HttpError(401, AUTHENTICATION_REQUIRED)
    return user


def _manageable(user: Any) -> QuerySet[Token]:
    rows = Token.objects.select_related("user")
    return rows if user.is_superuser else rows.filter(user=user)


def _token(user: Any, pk: int) -> Token:
    token = _manageable(_caller(user)).filter(pk=pk).first()
    if token is None:
        raise HttpError(404, f"token {pk} does not exist")
    return token


def _create(user: Any, body: TokenIn) -> NewTokenOut:
    if not _caller(user).has_perm(ADD_TOKEN):
        raise HttpError(403, f"needs the {ADD_TOKEN} permission")
    owner = user
    if body.user is not None and body.user != user.get_username():
        if not user.is_superuser:
            raise HttpError(403, "only superusers create tokens for other users")
        owner = get_user_model().objects.filter(username=body.user).first()
        if owner is None:
            raise HttpError(404, f"user {body.user} does not exist")
    token, key = create_token(owner, body.comment)
    return NewTokenOut(**token_out(token).model_dump(), key=key)


def _list(request: HttpRequest, user: Any, filters: TokenFilter) -> TokenPage:
    rows = _manageable(_caller(user))
    if filters.user is not None:
        rows = rows.filter(user__username=filters.user)
    if filters.enabled is not None:
        rows = rows.filter(enabled=filters.enabled)
    page = keyset_page(request, rows, "pk", filters)
    return TokenPage(items=[token_out(t) for t in page.rows], next_cursor=page.next_cursor, next=page.next)


def _disable(user: Any, pk: int) -> TokenOut:
    token = _token(user, pk)
    if token.enabled:
        token.enabled = False
        # save() announces the revocation (app/broker/signals.py): its sockets close with 4401.
        token.save(update_fields=["enabled"])
    return token_out(token)


def _delete(user: Any, pk: int) -> None:
    _token(user, pk).delete()


LIST_DOCS = responses(200, {"items": [TOKEN_EXAMPLE], "next_cursor": None, "next": None}, 401, 422)
CREATE_DOCS = responses(201, {**TOKEN_EXAMPLE, "key": "Xk3v9QaB…(43 characters)"}, 400, 401, 403, 404, 422,
                        request={"comment": "sensor gateway"})
DISABLE_DOCS = responses(200, {**TOKEN_EXAMPLE, "enabled": False}, 401, 404, 422)
DELETE_DOCS = responses(204, None, 401, 404, 422)


@router.post("/tokens", response={201: NewTokenOut, **CREATE_DOCS[0]}, openapi_extra=CREATE_DOCS[1],
             summary="Create a token (its key is in this answer only)")
async def create(request: HttpRequest, body: TokenIn) -> tuple[int, NewTokenOut]:
    token: NewTokenOut = await sync_to_async(_create)(request_user(request), body)
    return 201, token


@router.get("/tokens", response={200: TokenPage, **LIST_DOCS[0]}, openapi_extra=LIST_DOCS[1],
            summary="List your tokens (superusers: everyone's), without their keys")
async def list_tokens(request: HttpRequest, filters: Query[TokenFilter]) -> TokenPage:
    page: TokenPage = await sync_to_async(_list)(request, request_user(request), filters)
    return page


@router.post("/tokens/{pk}/disable", response={200: TokenOut, **DISABLE_DOCS[0]}, openapi_extra=DISABLE_DOCS[1],
             summary="Disable a token: it authenticates nobody, its open sockets close (4401)")
async def disable(request: HttpRequest, pk: int) -> TokenOut:
    token: TokenOut = await sync_to_async(_disable)(request_user(request), pk)
    return token


@router.delete("/tokens/{pk}", response={204: None, **DELETE_DOCS[0]}, openapi_extra=DELETE_DOCS[1],
               summary="Delete a token (its open sockets close, 4401)")
async def delete(request: HttpRequest, pk: int) -> tuple[int, None]:
    await sync_to_async(_delete)(request_user(request), pk)
    return 204, None

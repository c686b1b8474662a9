"""Tokens in the admin: an admin picks the user, the key is made here (as ``manage.py createtoken``
makes it) and shown once, on the page that answers the form; only its hash and prefix are kept.

A token acts as its user, so issuing one for somebody else is acting as them: only superusers add
tokens for other users; a staff user with "Can add token" adds them for themself. Likewise staff users
who are not superusers see, change and delete only their own tokens (enabling a token again that an
admin disabled would be acting as its user too)."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from app.auth.models import Token
from app.auth.services import issue_key


class TokenAddForm(forms.ModelForm[Token]):
    class Meta:
        model = Token
        fields = ("user", "comment", "enabled")


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin[Token]):
    list_display = ("prefix", "user", "enabled", "comment", "created_at")
    list_filter = ("enabled",)
    search_fields = ("prefix", "user__username", "comment")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The clear key between saving a new token and answering that request; gone with the request.
        self._issued: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Token]:
        tokens = super().get_queryset(request)
        user = request.user
        if user.is_superuser:
            return tokens
        # The admin lets only authenticated staff users in, so there is a user to filter by.
        return tokens.filter(user_id=user.pk) if user.pk is not None else tokens.none()

    def get_autocomplete_fields(self, request: HttpRequest) -> tuple[str, ...]:
        # Only a superuser picks among all users (a search box, not a list of thousands).
        return ("user",) if request.user.is_superuser else ()

    def formfield_for_foreignkey(self, db_field: models.ForeignKey[Any, Any], request: HttpRequest,
                                 **kwargs: Any) -> Any:
        if db_field.name == "user" and not request.user.is_superuser:
            # The only choice, and so the only value the form accepts (a forged POST gets a form error).
            kwargs["queryset"] = db_field.remote_field.model._default_manager.filter(pk=request.user.pk)
            kwargs["initial"] = request.user.pk
            kwargs["empty_label"] = None
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Token | None = None) -> tuple[str, ...]:
        # A key stays with the user it was given to: handing it to another is issuing a new one.
        return ("prefix", "created_at") if obj is None else ("prefix", "user", "created_at")

    def get_form(self, request: Any, obj: Token | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = TokenAddForm
            kwargs["fields"] = TokenAddForm.Meta.fields
        return super().get_form(request, obj, change, **kwargs)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
                 ) -> HttpResponse:
        # The answer to the form is the page with the key: "save and continue / add another" lead nowhere.
        context = {**(extra_context or {}), "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().add_view(request, form_url, context)

    def save_model(self, request: HttpRequest, obj: Token, form: Any, change: bool) -> None:
        if not change:
            if not request.user.is_superuser and obj.user_id != request.user.pk:
                raise PermissionDenied("only superusers add tokens for other users")
            self._issued[request] = issue_key(obj)
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: Token, post_url_continue: str | None = None) -> HttpResponse:
        key = self._issued.pop(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Token created",
            "opts": self.opts,
            "token": obj,
            "key": key,
        }
        response = TemplateResponse(request, "switchyard_auth/token_issued.html", context)
        # The key must not stay in any cache (a shared proxy, the browser's back button).
        add_never_cache_headers(response)
        return response

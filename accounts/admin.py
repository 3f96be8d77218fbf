"""Accounts admin: users (e-mail login), organisations with their members and credit limits,
and reseller API keys, which are issued and revoked through ``accounts.services`` only."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm
from django.db.models import QuerySet
from django.forms import BaseModelForm
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import (
    ApiKey,
    CreditLimit,
    DeniedParty,
    Membership,
    Organisation,
    OrganisationKind,
    User,
)
from accounts.screening import party_name_normalise
from accounts.services import api_key_issue, api_key_revoke


# --- Users ------------------------------------------------------------------------------
class UserCreationForm(BaseUserCreationForm):
    """Creates a user with a password (the e-mail address is the login)."""

    class Meta:
        model = User
        fields = ("email", "name")

    def clean_email(self) -> str:
        # The manager stores addresses lower-cased; compare the same way.
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(_("A user with this e-mail address already exists."))
        return email


class AdminUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "organisation", "role")


class UserMembershipInline(MembershipInline):
    autocomplete_fields = ("organisation",)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = AdminUserChangeForm
    add_form = UserCreationForm
    inlines = [UserMembershipInline]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Personal info"), {"fields": ("name", "preferred_language")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),
    )
    list_display = ("email", "name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined")

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> Any:
        return super().get_inline_instances(request, obj) if obj is not None else []


# --- Organisations ----------------------------------------------------------------------
class OrganisationAdminForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = [
            "name",
            "kind",
            "country",
            "notification_email",
            "commission_bp",
            "held_mass_cap_g",
        ]

    def clean_commission_bp(self) -> int | None:
        commission: int | None = self.cleaned_data.get("commission_bp")
        if commission is not None and commission > 10_000:
            raise forms.ValidationError(_("The commission is in basis points: 0 to 10,000 (100%)."))
        return commission

    def clean_kind(self) -> str:
        kind: str = self.cleaned_data["kind"]
        organisation = self.instance
        if (
            organisation.pk is not None
            and organisation.kind == OrganisationKind.RESELLER
            and kind != OrganisationKind.RESELLER
            and organisation.api_keys.filter(revoked_at__isnull=True).exists()
        ):
            raise forms.ValidationError(
                _("This reseller still has active API keys: revoke them before changing its kind.")
            )
        return kind


class CreditLimitForm(forms.ModelForm):
    class Meta:
        model = CreditLimit
        fields = ("currency", "amount")

    def clean_amount(self) -> int | None:
        amount: int | None = self.cleaned_data.get("amount")
        if amount is not None and amount < 0:
            raise forms.ValidationError(_("A credit limit cannot be negative."))
        return amount


class CreditLimitInline(admin.TabularInline):
    model = CreditLimit
    form = CreditLimitForm
    extra = 0
    verbose_name_plural = _(
        "credit limits (in the currency's minor unit: yen, or US cents; none means unlimited)"
    )


class OrganisationApiKeyInline(admin.TabularInline):
    """A read-only list: keys are issued from the API key page, where the raw key is shown."""

    model = ApiKey
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    form = OrganisationAdminForm
    inlines = [MembershipInline, CreditLimitInline, OrganisationApiKeyInline]
    list_display = ("name", "kind", "country", "commission_display", "held_mass_cap_g")
    list_filter = ("kind",)
    search_fields = ("name", "notification_email")

    @admin.display(description=_("commission"), ordering="commission_bp")
    def commission_display(self, obj: Organisation) -> str:
        whole, rest = divmod(obj.commission_bp, 100)
        return f"{whole}.{rest:02d}%"


# --- API keys ---------------------------------------------------------------------------
class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("organisation", "name")
        help_texts = {"name": _("A label for the reseller's own reference, e.g. 'production'.")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        organisation = cast(forms.ModelChoiceField, self.fields["organisation"])
        organisation.queryset = Organisation.objects.filter(kind=OrganisationKind.RESELLER)
        organisation.help_text = _("Keys are issued to resellers only.")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Adding a key issues it and shows the raw key once; afterwards only the prefix is
    shown (the digest never). A key is revoked, never edited or deleted."""

    list_display = ("organisation", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("organisation",)
    search_fields = ("organisation__name", "name", "prefix")
    actions = ["revoke_selected"]
    readonly_fields = (
        "organisation",
        "name",
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    )

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return self.readonly_fields if obj is not None else ("organisation", "name")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Revoke instead: bookings keep pointing at the key that placed them.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_apikey")

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: BaseModelForm, change: bool
    ) -> None:
        issued = api_key_issue(
            organisation=obj.organisation,
            name=obj.name,
            created_by=request.user,  # type: ignore[arg-type]
        )
        # The admin goes on with this object (log entry, redirect): make it the issued key.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.api_key, field.attname))
        obj._state.adding = False
        messages.success(
            request,
            _(
                "The new API key for %(organisation)s is %(key)s — copy it now: it is not "
                "stored and will not be shown again."
            )
            % {"organisation": obj.organisation, "key": issued.raw_key},
        )

    @admin.action(description=_("Revoke selected keys"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            revoked += 1
        self.message_user(
            request,
            ngettext("Revoked %(count)d key.", "Revoked %(count)d keys.", revoked)
            % {"count": revoked},
            messages.SUCCESS,
        )


class DeniedPartyForm(forms.ModelForm):
    # Longer than the column, so "Japan" gets the message below, not a length error.
    country = forms.CharField(
        label=_("country (ISO code)"),
        max_length=20,
        required=False,
        help_text=_("Empty: matches the name in any country."),
    )

    class Meta:
        model = DeniedParty
        fields = ("name", "country", "source", "note", "active")

    def clean_name(self) -> str:
        name = (self.cleaned_data.get("name") or "").strip()
        if not party_name_normalise(name):
            raise forms.ValidationError(
                _("Give a name with letters or digits: only a company form (Inc, Ltd…) is left.")
            )
        return name

    def clean_country(self) -> str:
        country = (self.cleaned_data.get("country") or "").strip().upper()
        if country and not (len(country) == 2 and country.isascii() and country.isalpha()):
            raise forms.ValidationError(
                _("Give the country as its two-letter ISO code (e.g. JP), or leave it empty.")
            )
        return country


@admin.register(DeniedParty)
class DeniedPartyAdmin(admin.ModelAdmin):
    """The denied-party list sales keep. Screening (``accounts.screening``) reads the active
    entries at every confirmation; an entry is deactivated rather than deleted, so the
    screening notes that name it keep their meaning."""

    form = DeniedPartyForm
    list_display = ("name", "country", "source", "active", "normalised", "created_at")
    list_filter = ("active", "country")
    search_fields = ("name", "source", "note")
    actions = ["deactivate_selected"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("compared as"))
    def normalised(self, obj: DeniedParty) -> str:
        return party_name_normalise(obj.name)

    @admin.action(description=_("Deactivate selected entries"), permissions=["change"])
    def deactivate_selected(self, request: HttpRequest, queryset: QuerySet[DeniedParty]) -> None:
        count = queryset.filter(active=True).update(active=False)
        self.message_user(
            request,
            ngettext("Deactivated %(count)d entry.", "Deactivated %(count)d entries.", count)
            % {"count": count},
            messages.SUCCESS,
        )

"""Users, the organisations every booking belongs to, and reseller API keys."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from marketplace.money import Currency


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an e-mail address."""

    email = models.EmailField(_("e-mail address"), unique=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    is_staff = models.BooleanField(_("staff status"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)
    preferred_language = models.CharField(_("language"), max_length=8, default="en")

    objects = UserManager()

    EMAIL_FIELD = "email"
    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []  # type: ignore[misc]

    class Meta:
        verbose_name = _("user")

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email


class OrganisationKind(models.TextChoices):
    PERSONAL = "personal", _("Personal account")
    CUSTOMER = "customer", _("Customer company")
    RESELLER = "reseller", _("Reseller")


class Organisation(models.Model):
    """Every booking belongs to one. Resellers add a commission rate, credit limits per
    currency (``CreditLimit``; none means unlimited) and a cap on mass held unpaid."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    kind = models.CharField(_("kind"), max_length=10, choices=OrganisationKind.choices)
    country = models.CharField(_("country (ISO code)"), max_length=2, blank=True)
    notification_email = models.EmailField(
        _("notification e-mail"),
        blank=True,
        help_text=_("Where booking notifications go (resellers: their operations desk)."),
    )
    commission_bp = models.PositiveIntegerField(
        _("commission (basis points)"), default=0, help_text=_("1000 = 10%.")
    )
    held_mass_cap_g = models.PositiveIntegerField(
        _("cap on unpaid held mass (g)"),
        null=True,
        blank=True,
        help_text=_("Empty means no cap."),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("organisation")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=OrganisationKind.values), name="organisation_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(commission_bp__lte=10000), name="organisation_commission_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_reseller(self) -> bool:
        return self.kind == OrganisationKind.RESELLER


class CreditLimit(models.Model):
    """How much may be confirmed on account, unpaid, in one currency."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="credit_limits"
    )
    currency = models.CharField(_("currency"), max_length=3, choices=Currency.choices)
    amount = models.BigIntegerField(_("limit (minor units)"))

    class Meta:
        verbose_name = _("credit limit")
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "currency"], name="credit_limit_one_per_currency"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="credit_limit_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.organisation}: {self.amount} {self.currency}"


class MemberRole(models.TextChoices):
    OWNER = "owner", _("Owner")
    BOOKER = "booker", _("Booker")
    VIEWER = "viewer", _("Viewer")


class Membership(models.Model):
    """A user's place in an organisation: owners and bookers book and cancel, viewers read."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(
        _("role"), max_length=10, choices=MemberRole.choices, default=MemberRole.BOOKER
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("membership")
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique"),
            models.CheckConstraint(
                condition=Q(role__in=MemberRole.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organisation} ({self.role})"

    @property
    def can_book(self) -> bool:
        return self.role in (MemberRole.OWNER, MemberRole.BOOKER)


class ApiKey(models.Model):
    """A reseller's key. Only a SHA-256 digest is stored; the prefix is indexed so the lookup
    is one indexed read, and the digest comparison is constant-time."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    digest = models.CharField(_("SHA-256 digest"), max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.organisation} · {self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class DeniedParty(models.Model):
    """An entry of the denied-party list sales maintain. A customer organisation whose name
    matches (ignoring case, punctuation and company suffixes), in the same country or with no
    country given here, is held for review instead of confirmed."""

    name = models.CharField(_("name"), max_length=200)
    country = models.CharField(
        _("country (ISO code)"),
        max_length=2,
        blank=True,
        help_text=_("Empty: matches the name in any country."),
    )
    source = models.CharField(
        _("source"), max_length=200, blank=True, help_text=_("The list this entry comes from.")
    )
    note = models.TextField(_("note"), blank=True)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("denied party")
        verbose_name_plural = _("denied parties")

    def __str__(self) -> str:
        return f"{self.name} ({self.country})" if self.country else self.name

"""Issue a reseller API key from the command line (see shared/API.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import ApiKey, Organisation
from accounts.services import api_key_issue, reseller_get_or_create


class Command(BaseCommand):
    help = (
        "Issue an API key to a reseller, creating the reseller (with no credit limit and no "
        "hold cap) if it does not exist. The new key is printed alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reseller", required=True, help="The reseller organisation's name.")
        parser.add_argument("--name", default="", help="A label for the key, e.g. 'production'.")

    def handle(self, *args: Any, reseller: str, name: str, **options: Any) -> None:
        name = name.strip()
        if not reseller.strip():
            raise CommandError('--reseller needs the reseller\'s name, e.g. "Orbit Travel".')
        limits = (
            ("--reseller", reseller.strip(), Organisation._meta.get_field("name").max_length),
            ("--name", name, ApiKey._meta.get_field("name").max_length),
        )
        for option, value, max_length in limits:
            if max_length is not None and len(value) > max_length:
                raise CommandError(f"{option} is too long: at most {max_length} characters.")
        with transaction.atomic():
            try:
                organisation, created = reseller_get_or_create(name=reseller)
            except ValueError as exc:
                raise CommandError(
                    f"{exc} Give the name of a reseller, or a new name to create one."
                ) from exc
            issued = api_key_issue(organisation=organisation, name=name)
        if created:
            self.stdout.write(
                f"Created reseller {organisation.name!r} (no credit limit, no hold cap yet)."
            )
        label = f" {name!r}" if name else ""
        self.stdout.write(
            f"Issued key{label} (prefix {issued.api_key.prefix}) to {organisation.name!r}. "
            "It is shown once, below; it cannot be recovered later."
        )
        self.stdout.write(issued.raw_key)

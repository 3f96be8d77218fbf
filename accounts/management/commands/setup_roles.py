"""Re-sync the staff role groups with accounts/roles.py. Safe to run any number of times."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.roles import UnknownPermission, roles_sync


class Command(BaseCommand):
    help = (
        "Create or update the staff role groups (Sales, Sales manager, Operations, Finance) "
        "so each holds exactly the permissions accounts/roles.py gives it."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with transaction.atomic():
                changes = roles_sync()
        except UnknownPermission as exc:
            raise CommandError(str(exc)) from exc
        for group, changed in changes.items():
            if changed:
                self.stdout.write(f"{group}: {', '.join(changed)}")
            else:
                self.stdout.write(f"{group}: up to date")

"""Give the staff roles the mission-operations models (manifests, offers, waitlists,
webhooks, mission contacts) that arrived after the roles were first created."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from accounts.roles import roles_sync

    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_staff_roles"),
        ("bookings", "0004_operations"),
        ("marketplace", "0003_mission_contacts_rebooking_fee"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]

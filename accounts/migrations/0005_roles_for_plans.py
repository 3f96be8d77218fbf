"""Give the staff roles the payment-plan, instalment, billing-document and denied-party
models, and operations the mission-status permission, which arrived after the roles."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from accounts.roles import roles_sync

    roles_sync(apps=apps)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_denied_parties"),
        ("bookings", "0005_plans_documents_screening"),
        ("marketplace", "0004_payment_plans_tax"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]

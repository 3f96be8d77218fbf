"""The back office's staff roles as groups (see accounts/roles.py); ``manage.py setup_roles``
re-syncs them after a role changes."""

from django.db import migrations


def create_roles(apps, schema_editor):
    from accounts.roles import roles_sync

    roles_sync(apps=apps)


def remove_roles(apps, schema_editor):
    from accounts.roles import CUSTOM_PERMISSIONS, ROLES

    apps.get_model("auth", "Group").objects.filter(
        name__in=[role.group_name for role in ROLES]
    ).delete()
    permission = apps.get_model("auth", "Permission")
    for app_label, model, codename in CUSTOM_PERMISSIONS:
        permission.objects.filter(
            content_type__app_label=app_label, content_type__model=model, codename=codename
        ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("bookings", "0003_payments"),
        ("marketplace", "0002_per_unit_figures_required"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]

from django.db import migrations


def create_cursor(apps, schema_editor):
    # The sequencer locks this one row; it must exist before the first event is numbered.
    apps.get_model("bookings", "EventFeedCursor").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("bookings", "0001_initial")]

    operations = [migrations.RunPython(create_cursor, migrations.RunPython.noop)]

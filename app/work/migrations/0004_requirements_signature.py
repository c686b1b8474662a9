from typing import Any

from django.db import migrations, models


def sign_existing(apps: Any, schema_editor: Any) -> None:
    """Requests stored before the column existed get their signature (the queue skips by it)."""
    from app.work.scheduling import requirements_of, signature_of

    WorkRequest = apps.get_model("work", "WorkRequest")
    rows = WorkRequest.objects.filter(status__in=("pending", "running")).only("pk", "task_data")
    for row in rows.iterator(chunk_size=1000):
        signature = signature_of(requirements_of(row.task_data))
        if signature:
            WorkRequest.objects.filter(pk=row.pk).update(requirements_signature=signature)


class Migration(migrations.Migration):

    dependencies = [
        ('work', '0003_worker_connected_via'),
    ]

    operations = [
        migrations.AddField(
            model_name='workrequest',
            name='requirements_signature',
            field=models.CharField(blank=True, default='', editable=False, max_length=64),
        ),
        migrations.RunPython(sign_existing, migrations.RunPython.noop),
    ]

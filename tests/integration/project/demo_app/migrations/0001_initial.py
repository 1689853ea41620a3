from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    # Django's migration loader reads these class attributes.
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012
    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("token", models.CharField(max_length=100, unique=True)),
                ("text", models.TextField()),
                ("via", models.CharField(max_length=40)),
            ],
        ),
    ]

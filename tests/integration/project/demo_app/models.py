from __future__ import annotations

from django.db import models


class Note(models.Model):
    """A row the tests look for in SQLite after each write."""

    token = models.CharField(max_length=100, unique=True)
    text = models.TextField()
    via = models.CharField(max_length=40)  # which code path wrote it

"""A one-view Django project on a real PostgreSQL (test_postgres.py).

The server's environment says where the database is (``DEMO_PG_PORT``),
how long Django keeps a connection (``DEMO_CONN_MAX_AGE``), and the
application name its connections carry (``DEMO_PG_APP``), by which the test
finds them on the server.
"""

from __future__ import annotations

import os

SECRET_KEY = "integration-suite-only"  # never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "pg_site.urls"
ASGI_APPLICATION = "pg_site.asgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ.get("DEMO_PG_PORT", "5432"),
        "USER": "postgres",
        "NAME": "postgres",
        "CONN_MAX_AGE": int(os.environ.get("DEMO_CONN_MAX_AGE", "0")),
        "OPTIONS": {"application_name": os.environ.get("DEMO_PG_APP", "pg_site")},
    }
}

"""Settings of the demo project the integration suite serves.

Each server process gets its own SQLite file through ``DEMO_DB`` so tests can
inspect every write directly, without going through the code under test.
"""

from __future__ import annotations

import os

SECRET_KEY = "integration-suite-only"  # never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"
ASGI_APPLICATION = "demo_site.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "demo_app",
]

# Sync-only, async-only and hybrid middleware interleaved, so Django has to
# adapt between the two worlds several times on every request.
MIDDLEWARE = [
    "demo_app.middleware.SyncOuter",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "demo_app.middleware.AsyncMiddle",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "demo_app.middleware.hybrid",
    "demo_app.middleware.SyncInner",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", ":memory:"),
        "OPTIONS": {
            # Each request gets its own thread (and so its own connection) under
            # ASGI; concurrent writers must queue rather than fail.
            "timeout": 60,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

# Logins in the suite should cost nothing; the hasher is not under test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if "DEMO_REDIS" in os.environ:
    # A real Redis between this server and the test process (test_redis.py).
    CHANNEL_LAYERS["default"] = {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["DEMO_REDIS"]]},
    }

# Django only logs request errors to the console in DEBUG mode; the tests read
# the server's log to see that an exception arrived intact. Not propagated: a
# log record kept by pytest would keep the failed request's frames alive.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}
    },
}

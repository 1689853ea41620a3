"""Settings of the end-to-end benchmark's Django project.

``BENCH_DB`` names the SQLite file (run.py creates and seeds it),
``BENCH_MIDDLEWARE`` is ``none`` or ``default`` (what ``startproject``
writes), and ``BENCH_TRACE=1`` wraps the application in asgire's
``TraceMiddleware``, which logs each request's crossings.
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only"  # never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "benchsite.urls"
ASGI_APPLICATION = "benchsite.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]

DEFAULT_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
MIDDLEWARE = {"none": [], "default": DEFAULT_MIDDLEWARE}[
    os.environ.get("BENCH_MIDDLEWARE", "none")
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", ":memory:"),
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        "asgire.trace": {"handlers": ["stderr"], "level": "INFO"},
    },
}

"""Minimal settings for the restyle example site (no database, no sessions)."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "restyle_site.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

#: Largest photo accepted by the analysis view, in bytes.
RESTYLE_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Django refuses bigger request bodies before the view runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = RESTYLE_MAX_UPLOAD_BYTES + 64 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = RESTYLE_MAX_UPLOAD_BYTES + 64 * 1024

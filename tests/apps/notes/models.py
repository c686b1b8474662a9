"""A user's app as SWITCHYARD_APPS adds one: a model beside Switchyard's own (tests/test_extension_apps.py)."""

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)

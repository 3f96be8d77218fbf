"""Local development: runs with no environment at all (SQLite, eager tasks, console mail)."""

from .base import *

DEBUG = env.bool("DJANGO_DEBUG", default=True)

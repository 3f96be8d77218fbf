"""The CI tiers prove what they claim: the PostgreSQL tier really runs on PostgreSQL."""

import os

import pytest
from django.db import connection


@pytest.mark.django_db
def test_database_is_the_one_the_tier_expects() -> None:
    # .ci/run sets MOONSLOT_EXPECT_DB per tier; locally it follows DATABASE_URL.
    url = os.environ.get("DATABASE_URL", "")
    default = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
    expected = os.environ.get("MOONSLOT_EXPECT_DB", default)
    assert connection.vendor == expected
    if expected == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            row = cursor.fetchone()
        assert row is not None
        assert "PostgreSQL" in row[0]

from __future__ import annotations

import pytest

from accounts.models import User
from accounts.roles import FINANCE, OPERATIONS, SALES, SALES_MANAGER
from tests.admin.helpers import staff_user


@pytest.fixture
def sales() -> User:
    return staff_user(role=SALES, email="sales@moonslot.example")


@pytest.fixture
def manager() -> User:
    return staff_user(role=SALES_MANAGER, email="manager@moonslot.example")


@pytest.fixture
def operations() -> User:
    return staff_user(role=OPERATIONS, email="ops@moonslot.example")


@pytest.fixture
def finance() -> User:
    return staff_user(role=FINANCE, email="finance@moonslot.example")

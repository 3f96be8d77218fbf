"""Staff reach the admin only through allauth's login with a second factor. Every test here
signs in through the real login form (no force_login)."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from django.test import Client

from accounts.mfa import DEMO_TOTP_SECRET, demo_staff_totp_setup
from accounts.models import User
from tests.admin.helpers import PASSWORD, TEST_TOTP_SECRET, give_totp, post_totp, staff_user
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def login(client: Client, user: User, password: str = PASSWORD) -> None:
    response = client.post("/accounts/login/", {"login": user.email, "password": password})
    assert response.status_code == 302, response.content.decode()[:2000]


def opens_admin(client: Client) -> bool:
    response = client.get("/admin/")
    return response.status_code == 200 and "site-name" in response.content.decode()


def test_an_anonymous_visitor_is_sent_to_allauths_login_with_next() -> None:
    response = Client().get("/admin/bookings/booking/?q=ABC")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    assert "%2Fadmin%2Fbookings%2Fbooking%2F" in response["Location"]


def test_the_admins_own_login_page_redirects_to_allauths_and_signs_nobody_in() -> None:
    user = staff_user(superuser=True)
    client = Client()

    page = client.get("/admin/login/?next=/admin/bookings/")
    posted = client.post(
        "/admin/login/", {"username": user.email, "password": PASSWORD, "next": "/admin/"}
    )

    assert page.status_code == 302
    assert page["Location"] == "/accounts/login/?next=%2Fadmin%2Fbookings%2F"
    assert posted.status_code == 302
    assert posted["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    assert not opens_admin(client)


def test_the_admin_login_page_does_not_redirect_off_site() -> None:
    response = Client().get("/admin/login/?next=https://evil.example/")

    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2F"


def test_staff_with_totp_must_enter_a_code_after_the_password_before_the_admin_opens() -> None:
    user = staff_user(superuser=True)
    give_totp(user)
    client = Client()

    response = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert not opens_admin(client)

    wrong = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert wrong.status_code == 200
    assert not opens_admin(client)

    right = post_totp(client, "/accounts/2fa/authenticate/", TEST_TOTP_SECRET)
    assert right.status_code == 302
    assert opens_admin(client)


def test_staff_without_totp_signed_in_by_password_are_sent_to_set_it_up_then_admin_opens() -> None:
    user = staff_user(superuser=True)
    client = Client()
    login(client, user)

    blocked = client.get("/admin/bookings/booking/")
    assert blocked.status_code == 302
    assert blocked["Location"].startswith("/accounts/2fa/totp/activate/")
    assert not opens_admin(client)

    # allauth asks for the password again before adding a factor.
    reauth = client.get(blocked["Location"])
    assert reauth.status_code == 302
    assert reauth["Location"].startswith("/accounts/reauthenticate/")
    back = client.post(reauth["Location"], {"password": PASSWORD})
    assert back.status_code == 302
    # Activation shows a fresh secret (kept in the session) and wants a code from it.
    activate = client.get(back["Location"])
    assert activate.status_code == 200
    secret = activate.context["form"].secret
    activated = post_totp(client, "/accounts/2fa/totp/activate/", secret)
    assert activated.status_code == 302
    assert Authenticator.objects.filter(user=user, type="totp").exists()

    # Enabling TOTP is not itself a sign-in with it: the admin asks for a code once.
    ask = client.get("/admin/")
    assert ask.status_code == 302
    assert ask["Location"] == "/accounts/2fa/reauthenticate/?next=%2Fadmin%2F"
    done = post_totp(client, ask["Location"], secret)
    assert done.status_code == 302
    assert done["Location"] == "/admin/"
    assert opens_admin(client)


def test_a_password_only_session_of_staff_with_totp_is_asked_for_the_code() -> None:
    # E.g. a session from before TOTP was enabled, or any sign-in path that skipped the stage.
    user = staff_user(superuser=True)
    client = Client()
    login(client, user)
    give_totp(user)

    response = client.get("/admin/marketplace/mission/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/reauthenticate/")
    assert not opens_admin(client)


def test_a_signed_in_customer_gets_403_from_the_admin_not_a_login_loop() -> None:
    customer = UserFactory.create()
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=customer, email=customer.email, verified=True, primary=True)
    client = Client()
    login(client, customer)

    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/dashboard/").status_code == 403


def test_the_demo_staff_setup_gives_a_totp_that_signs_in_and_is_idempotent() -> None:
    user = staff_user(superuser=True)

    first = demo_staff_totp_setup(user)
    second = demo_staff_totp_setup(user)

    assert DEMO_TOTP_SECRET in first
    assert "otpauth://totp/" in first
    assert "issuer=Moonslot" in first
    assert first == second
    assert Authenticator.objects.filter(user=user).count() == 1
    client = Client()
    login(client, user)
    post_totp(client, "/accounts/2fa/authenticate/", DEMO_TOTP_SECRET)
    assert opens_admin(client)


def test_the_demo_setup_leaves_an_authenticator_of_the_staff_members_own() -> None:
    user = staff_user(superuser=True)
    give_totp(user, secret=TEST_TOTP_SECRET)

    text = demo_staff_totp_setup(user)

    assert DEMO_TOTP_SECRET not in text
    assert Authenticator.objects.get(user=user).data == {"secret": TEST_TOTP_SECRET}

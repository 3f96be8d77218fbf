"""Customer accounts through HTTP: sign up, verify the e-mail address, sign in and out, reset
a password, in English and Japanese, inside the site's own layout."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import MemberRole, Membership, OrganisationKind, User
from tests.factories import SlotClassFactory

pytestmark = pytest.mark.django_db

PASSWORD = "lunar-regolith-42"
LINK = re.compile(r"https?://testserver(/accounts/\S+)")


def sign_up(client: Client, email: str = "ada@example.com") -> None:
    response = client.post(
        reverse("account_signup"),
        {"email": email, "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == reverse("account_email_verification_sent")


def link_in(message: mail.EmailMessage) -> str:
    match = LINK.search(str(message.body))
    assert match is not None, message.body
    return match.group(1)


def switch_to_japanese(client: Client) -> None:
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})


def test_sign_up_creates_the_persons_own_organisation(client: Client) -> None:
    sign_up(client)

    user = User.objects.get(email="ada@example.com")
    membership = Membership.objects.select_related("organisation").get(user=user)
    assert membership.role == MemberRole.OWNER
    assert membership.organisation.kind == OrganisationKind.PERSONAL
    assert membership.organisation.notification_email == "ada@example.com"


def test_sign_up_sends_a_verification_link_that_verifies_the_address(client: Client) -> None:
    sign_up(client)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    assert mail.outbox[0].subject.startswith("[Moonslot] ")
    confirm_path = link_in(mail.outbox[0])
    assert not EmailAddress.objects.get(email="ada@example.com").verified

    page = client.get(confirm_path)
    assert page.status_code == 200
    assert not EmailAddress.objects.get(email="ada@example.com").verified  # GET confirms nothing
    response = client.post(confirm_path)

    assert response.status_code == 302
    assert EmailAddress.objects.get(email="ada@example.com").verified


def test_sign_in_before_verification_is_sent_to_verify_first(client: Client) -> None:
    sign_up(client)
    other = Client()

    response = other.post(
        reverse("account_login"), {"login": "ada@example.com", "password": PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert other.get(reverse("bookings:list")).status_code == 302  # still signed out


def test_verified_customer_signs_in_and_returns_to_the_booking_form(client: Client) -> None:
    capsule = SlotClassFactory.per_unit()
    book_url = reverse(
        "bookings:new", kwargs={"code": capsule.mission.code, "slot_class_id": capsule.pk}
    )
    sign_up(client)
    client.post(link_in(mail.outbox[0]))
    client.post(reverse("account_logout"))

    to_login = client.get(book_url)
    assert to_login.status_code == 302
    login_url = to_login["Location"]
    assert login_url.startswith(reverse("account_login"))
    response = client.post(
        login_url, {"login": "ada@example.com", "password": PASSWORD, "next": book_url}
    )

    assert response.status_code == 302
    assert response["Location"] == book_url
    assert client.get(book_url).status_code == 200


def test_confirming_in_the_same_browser_signs_the_customer_in(client: Client) -> None:
    sign_up(client)

    client.post(link_in(mail.outbox[0]))

    assert client.get(reverse("bookings:list")).status_code == 200


def test_wrong_password_is_refused_with_a_message(client: Client) -> None:
    sign_up(client)
    client.post(link_in(mail.outbox[0]))
    client.post(reverse("account_logout"))

    response = client.post(
        reverse("account_login"), {"login": "ada@example.com", "password": "wrong-one"}
    )

    assert response.status_code == 200
    assert "not correct" in response.content.decode()
    assert client.get(reverse("bookings:list")).status_code == 302


def test_sign_up_in_japanese_keeps_japanese_as_the_e_mail_language(client: Client) -> None:
    switch_to_japanese(client)

    sign_up(client, "hanako@example.jp")

    assert User.objects.get(email="hanako@example.jp").preferred_language == "ja"
    assert "メール" in mail.outbox[0].subject


def test_sign_up_in_english_keeps_english(client: Client) -> None:
    sign_up(client, "grace@example.com")

    assert User.objects.get(email="grace@example.com").preferred_language == "en"


def test_sign_up_refuses_an_address_already_registered(client: Client) -> None:
    sign_up(client)
    other = Client()

    response = other.post(
        reverse("account_signup"),
        {"email": "ada@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    # allauth does not reveal that the address is taken: it says a mail was sent and tells
    # the owner by e-mail; either way no second account and no second organisation.
    assert response.status_code in (200, 302)
    assert User.objects.filter(email="ada@example.com").count() == 1
    assert Membership.objects.filter(user__email="ada@example.com").count() == 1


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", ["Sign In", 'lang="en"']), ("ja", ["ログイン", 'lang="ja"'])],
)
def test_account_pages_use_the_site_layout(
    client: Client, language: str, expected: list[str]
) -> None:
    if language == "ja":
        switch_to_japanese(client)

    for name in ("account_login", "account_signup", "account_reset_password"):
        html = client.get(reverse(name)).content.decode()
        assert 'class="site-header"' in html, name
        assert 'class="site-footer"' in html, name
        assert "account-page" in html, name
        assert "Menu:" not in html  # allauth's bare layout is gone
    login = client.get(reverse("account_login")).content.decode()
    for text in expected:
        assert text in login


def test_password_reset_by_e_mail_link(client: Client) -> None:
    sign_up(client)
    client.post(link_in(mail.outbox[0]))
    client.post(reverse("account_logout"))
    mail.outbox.clear()

    client.post(reverse("account_reset_password"), {"email": "ada@example.com"})
    assert len(mail.outbox) == 1
    # allauth moves the key from the URL into the session, then shows the form.
    key_link = client.get(link_in(mail.outbox[0]))
    assert key_link.status_code == 302
    set_url = key_link["Location"]
    assert client.get(set_url).status_code == 200
    response = client.post(
        set_url, {"password1": "new-lunar-password-7", "password2": "new-lunar-password-7"}
    )

    assert response.status_code == 302
    assert User.objects.get(email="ada@example.com").check_password("new-lunar-password-7")


def test_sign_out_needs_a_post(client: Client) -> None:
    sign_up(client)
    client.post(link_in(mail.outbox[0]))

    assert client.get(reverse("account_logout")).status_code == 200  # a confirmation page
    assert client.get(reverse("bookings:list")).status_code == 200
    client.post(reverse("account_logout"))

    assert client.get(reverse("bookings:list")).status_code == 302

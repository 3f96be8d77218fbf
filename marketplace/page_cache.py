"""Whole public catalogue pages for anonymous visitors, from the catalogue cache
(``marketplace.cache``: per catalogue version, at most ``MOONSLOT_CATALOGUE_CACHE_SECONDS``
old).

A visitor who sends no cookie but the CSRF and language cookies is anonymous and has no
messages waiting (both live in the session or their own cookies), so the page they get depends
only on the URL, the language (which sets the display currency) and the time zone, which key
the entry.
The one thing in it that is theirs, the CSRF token of the language switcher's form, is cut out
before the page is stored and a fresh one (masking this visitor's own CSRF secret, or a new
one whose cookie the CSRF middleware sets) is put back in each time it is served. Everything
else about the response (security headers, the content security policy, cookies, ``Vary``) is
still added by the middleware, as for any page.

Anyone else (signed in, a session or messages cookie, a query string such as a quote, anything
but GET or HEAD) gets the view as it is, whose fragments are still cached
(``{% catalogue_fragment %}``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.utils import timezone
from django.utils.translation import get_language

from marketplace.cache import catalogue_lookup, catalogue_store

View = Callable[..., HttpResponse]

# What {% csrf_token %} renders; the token is 64 letters and digits.
_CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([A-Za-z0-9]{64})"')
_PLACEHOLDER = b"\x00csrf-token\x00"


def _cookies_allowed() -> frozenset[str]:
    return frozenset({settings.CSRF_COOKIE_NAME, settings.LANGUAGE_COOKIE_NAME})


def is_anonymous_page_request(request: HttpRequest) -> bool:
    """A plain GET (or HEAD) without a query string from a visitor with no session."""
    return (
        request.method in ("GET", "HEAD")
        and not request.META.get("QUERY_STRING")
        and set(request.COOKIES) <= _cookies_allowed()
    )


def _cacheable_body(response: HttpResponse) -> bytes | None:
    """The page with its CSRF token cut out, or None if it must not be stored."""
    if response.status_code != 200 or response.streaming or response.cookies:
        return None
    body = response.content
    tokens = set(_CSRF_INPUT.findall(body))
    if len(tokens) > 1:
        return None  # not what this module knows how to serve again
    for token in tokens:
        body = body.replace(token, _PLACEHOLDER)
    return body


def anonymous_page_cache(name: str) -> Callable[[View], View]:
    """Serve the decorated view's page to anonymous visitors from the catalogue cache."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not is_anonymous_page_request(request):
                return view(request, *args, **kwargs)
            language = get_language() or ""
            parts = (
                request.scheme or "",
                request.get_host(),
                request.path,
                language,
                timezone.get_current_timezone_name(),
            )
            found, entry, version = catalogue_lookup(f"page:{name}", parts, request=request)
            if found:
                body, content_type = entry
                if _PLACEHOLDER in body:
                    body = body.replace(_PLACEHOLDER, get_token(request).encode())
                return HttpResponse(body, content_type=content_type)
            response = view(request, *args, **kwargs)
            body = _cacheable_body(response)
            if body is not None:
                entry = (body, response["Content-Type"])
                catalogue_store(f"page:{name}", parts, entry, version=version)
            return response

        return wrapped

    return decorator

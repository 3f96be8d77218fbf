"""A short-lived cache of the public catalogue (the API's mission endpoints and the rendered
mission pages), keyed by a catalogue version.

The version is one integer in Django's cache (Redis in production). Every change to what the
catalogue shows moves it on when its transaction commits: a save or delete of any catalogue
model (missions, slot classes, prices, schedule changes, landers, payment plans…), and so
every booking transition that changes a class's counters, since those save the class row
(``taken_g``/``taken_units``). Each entry is stored with the version current when its build
started and is served only while that is still the current version, so a commit makes every
older entry unusable at once: one ``INCR`` per change, no key scanning. The version and the
entry are read together in one round trip (``get_many``); an entry written late under an
older version can overwrite a newer one, which only costs the next reader a rebuild. Each
process keeps a copy of the entries it read or wrote lately, served while the version it
reads stands, so a hit moves the version, not the entry, over the network.

A hold past its expiry frees capacity without any write (the catalogue counts it free from
the clock), so nothing bumps the version then; entries therefore live at most
``MOONSLOT_CATALOGUE_CACHE_SECONDS`` (0 turns the cache off). That is the only staleness, and
it can only hide capacity, never promise capacity that is gone: taking capacity always
commits a counter save, which bumps the version. Holds never read this cache; they check
capacity under the class's row lock.

The cache fails open: if it cannot be read or written, the catalogue is built from the
database as if nothing were cached.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

logger = logging.getLogger(__name__)

VERSION_KEY = "catalogue:version"
# A view puts this in a template's context, true, when the page shows something asked for in
# this request (a quote): its ``{% catalogue_fragment %}`` blocks are then rendered afresh,
# neither read from nor stored in the cache.
UNCACHED_FRAGMENTS = "uncached_fragments"
T = TypeVar("T")


def cache_seconds() -> int:
    return int(getattr(settings, "MOONSLOT_CATALOGUE_CACHE_SECONDS", 0))


def _fresh_version() -> int:
    # From the clock (in microseconds) rather than 1: if the key is ever evicted while
    # entries survive, a restarted count can never land on a number they were written under.
    return time.time_ns() // 1000


def catalogue_version() -> int:
    """The current version, started if the cache has none."""
    version = cache.get(VERSION_KEY)
    if version is None:
        cache.add(VERSION_KEY, _fresh_version(), timeout=None)
        version = cache.get(VERSION_KEY)
    return int(version or 0)


def _bump() -> None:
    try:
        cache.incr(VERSION_KEY)
    except ValueError:  # no version yet (or evicted): any new number will do
        cache.set(VERSION_KEY, _fresh_version(), timeout=None)


def catalogue_changed() -> None:
    """Call inside the transaction that changes what the catalogue shows; the version moves
    on once it commits (not before: a reader in between would cache the old state under the
    new number). A failing cache is logged, never raised into the committed request."""
    transaction.on_commit(_bump, robust=True)


def catalogue_key(name: str, parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"catalogue:{name}:{digest}"


def _request_version(request: Any) -> int:
    """The current version, read once per request when there is one."""
    version = getattr(request, "_catalogue_version", None)
    if version is None:
        version = cache.get(VERSION_KEY)
        if version is None:
            version = catalogue_version()
        if request is not None:
            request._catalogue_version = version
    return int(version)


def _read(key: str, request: Any) -> tuple[int, Any]:
    """The current version and the entry at ``key``, in one round trip (or the version alone
    when this process holds a copy of the entry). With ``request`` the version is read once
    per request (a page has several fragments): within one request every fragment then
    belongs to the same version."""
    if key in _local:
        current = _request_version(request)
        return current, _local_entry(key, current)
    known = getattr(request, "_catalogue_version", None)
    if known is not None:
        return int(known), cache.get(key)
    found = cache.get_many([VERSION_KEY, key])
    version = found.get(VERSION_KEY)
    if version is None:
        version = catalogue_version()
    if request is not None:
        request._catalogue_version = version
    return int(version), found.get(key)


# The entries this process read or wrote lately, with the version and time of their build:
# a hit while the version stands then moves only the version over the network, not the
# entry (the catalogue list is 62 KB, fetched at every request otherwise). A changed version,
# or an entry older than the cache's bound, falls back to the shared entry.
_LOCAL_ENTRIES = 64
_local: OrderedDict[str, tuple[int, float, Any]] = OrderedDict()


def _local_entry(key: str, version: int) -> Any:
    """The entry at ``key`` as the shared cache holds it, from this process's copy if it is
    of ``version`` and young enough, else from the shared cache."""
    held = _local.get(key)
    if held is not None and held[0] == version and time.time() - held[1] < cache_seconds():
        return held
    _local.pop(key, None)
    return cache.get(key)


def forget_local_copies() -> None:
    """Drop this process's copies (tests, between cases)."""
    _local.clear()


def _remember(key: str, entry: tuple[int, float, Any]) -> None:
    _local[key] = entry
    _local.move_to_end(key)
    while len(_local) > _LOCAL_ENTRIES:
        _local.popitem(last=False)


def catalogue_lookup(
    name: str, parts: tuple[str, ...], *, request: Any = None
) -> tuple[bool, Any, int | None]:
    """``(found, value, version)`` for ``name`` and ``parts`` at the current version: give
    ``version`` back to ``catalogue_store`` with the value built on a miss. ``version`` is
    None when the cache is off or unavailable (then nothing is stored)."""
    if cache_seconds() <= 0:
        return False, None, None
    try:
        version, entry = _read(catalogue_key(name, parts), request)
    except Exception:
        logger.warning("catalogue cache unavailable; building from the database", exc_info=True)
        return False, None, None
    # An entry is (version, built at, value); anything else (an older layout) is a miss.
    if (
        isinstance(entry, tuple)
        and len(entry) == 3
        and entry[0] == version
        and time.time() - entry[1] < cache_seconds()
    ):
        _remember(catalogue_key(name, parts), entry)
        return True, entry[2], version
    return False, None, version


def catalogue_store(name: str, parts: tuple[str, ...], value: Any, *, version: int | None) -> None:
    """Store ``value`` built after ``catalogue_lookup`` returned ``version``."""
    seconds = cache_seconds()
    if version is None or seconds <= 0:
        return
    key = catalogue_key(name, parts)
    entry = (version, time.time(), value)
    try:
        cache.set(key, entry, seconds)
    except Exception:
        logger.warning("catalogue cache unavailable; not storing", exc_info=True)
        return
    _remember(key, entry)


def catalogue_cached(
    name: str, parts: tuple[str, ...], build: Callable[[], T], *, request: Any = None
) -> T:
    """``build()``'s value for ``name`` and ``parts`` (language, currency, URL… whatever the
    value depends on) at the current catalogue version, built at most once per version and
    per ``MOONSLOT_CATALOGUE_CACHE_SECONDS``. With ``request``, the version is read once for
    all of that request's fragments."""
    found, hit, version = catalogue_lookup(name, parts, request=request)
    if found:
        cached: T = hit
        return cached
    value = build()
    catalogue_store(name, parts, value, version=version)
    return value


def _model_changed(sender: type, **kwargs: Any) -> None:
    catalogue_changed()


def connect_signals() -> None:
    """Bump the version on every save and delete of a catalogue model (from
    ``MarketplaceConfig.ready``)."""
    for model in apps.get_app_config("marketplace").get_models():
        uid = f"catalogue-cache:{model._meta.label}"
        post_save.connect(_model_changed, sender=model, dispatch_uid=uid + ":save")
        post_delete.connect(_model_changed, sender=model, dispatch_uid=uid + ":delete")

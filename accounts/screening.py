"""Denied-party screening: does a customer's name match an entry of the list sales keep?

Names are compared after normalisation (``party_name_normalise``): Unicode NFKC and casefold,
punctuation and symbols as spaces, company-form words dropped (``inc``, ``ltd``, ``co``,
``kk``, ``gmbh``, ``株式会社``…), spaces collapsed. An entry matches a name when

- the normalised names are equal, or
- one contains the other as whole words (``"acme space"`` in ``"acme space systems"``), as
  long as the shorter has at least two words or ``MIN_CONTAINED_CHARS`` characters: a
  one-word entry such as ``"moon"`` would otherwise stop every lunar company;

and the entry's country is empty, equal to the customer's, or the customer's country is not
known (a reseller's end customer, a personal account without one). A match only stops the
booking for a person's review (``bookings.screening``), so the rules lean towards matching:
a false positive costs sales a click, a false negative a sanctions breach.

Screening reads the active entries once per call (one query, even when the list is empty)
and caches nothing, so an entry sales add is applied to the very next confirmation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Q

from accounts.models import DeniedParty

# Company-form words dropped from the end of a name (after punctuation became spaces, so
# "Co., Ltd." is "co ltd"). Only trailing ones: "Co" inside a name ("Co Op Space") stays.
CORPORATE_SUFFIXES = frozenset(
    {
        "inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited",
        "llc", "llp", "lp", "plc", "gmbh", "ag", "kg", "sa", "sas", "sarl", "srl", "spa",
        "bv", "nv", "ab", "as", "oy", "oyj", "pte", "pty", "kk", "gk", "yk", "kabushiki",
        "kaisha", "godo", "株", "有", "合",
    }
)  # fmt: skip
# Japanese company forms are written before or after the name, without spaces.
JAPANESE_FORMS = ("株式会社", "有限会社", "合同会社", "合資会社", "合名会社")
MIN_CONTAINED_CHARS = 5

_SEPARATORS = re.compile(r"\s+")


def party_name_normalise(name: str) -> str:
    """``name`` as screening compares it (see the module docstring)."""
    text = unicodedata.normalize("NFKC", name or "").casefold()
    for form in JAPANESE_FORMS:
        text = text.replace(form, " ")
    text = "".join(" " if unicodedata.category(char)[0] in "PSZC" else char for char in text)
    words = _SEPARATORS.split(text.strip())
    while words and words[-1] in CORPORATE_SUFFIXES and len(words) > 1:
        words.pop()
    if words and words[0] in {"株", "有", "合"}:  # "(株)ムーン" is the prefix form
        words = words[1:]
    return " ".join(words)


def _contains_words(longer: str, shorter: str) -> bool:
    return f" {shorter} " in f" {longer} "


def party_names_match(a: str, b: str) -> bool:
    """Whether two normalised names match: equal, or one holds the other as whole words."""
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    if " " not in shorter and len(shorter) < MIN_CONTAINED_CHARS:
        return False
    return _contains_words(longer, shorter)


@dataclass(frozen=True)
class ScreeningHit:
    """One list entry that matched one of the customer's names."""

    party_id: int
    party_name: str
    party_country: str
    matched_name: str

    def describe(self) -> str:
        where = f" ({self.party_country})" if self.party_country else ""
        return f"“{self.matched_name}” matches the denied party “{self.party_name}”{where}"


def denied_parties_screen(*, names: Iterable[str], country: str = "") -> list[ScreeningHit]:
    """The active entries that match any of ``names`` for a customer in ``country`` (an ISO
    code; empty when unknown, which matches entries of every country). One query."""
    normalised = {party_name_normalise(name): name for name in names if name and name.strip()}
    normalised.pop("", None)
    if not normalised:
        return []
    entries = DeniedParty.objects.filter(active=True)
    country = (country or "").strip().upper()
    if country:
        entries = entries.filter(Q(country="") | Q(country__iexact=country))
    hits = []
    for party_id, party_name, party_country in entries.values_list("pk", "name", "country"):
        party = party_name_normalise(party_name)
        for candidate, original in normalised.items():
            if party_names_match(candidate, party):
                hits.append(ScreeningHit(party_id, party_name, party_country, original))
                break
    return hits

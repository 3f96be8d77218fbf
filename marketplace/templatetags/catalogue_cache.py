"""``{% catalogue_fragment "name" value… %}…{% endcatalogue_fragment %}``: the enclosed
template, rendered once per catalogue version (``marketplace.cache``) and per language,
display currency, time zone and signed-in-or-not, plus any ``value`` given (a mission code).

Whatever the fragment shows must come from the catalogue and from those keys only: it is
served to everyone with the same keys. A page showing something of one request's own (a quote)
sets ``uncached_fragments`` in its context, and its fragments are rendered afresh. Views pass
querysets and lazy objects, so a cached fragment costs no query at all.
"""

from __future__ import annotations

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

from marketplace.cache import UNCACHED_FRAGMENTS, catalogue_cached
from marketplace.views import preferred_currency

register = template.Library()


class CatalogueFragmentNode(template.Node):
    def __init__(self, nodelist: NodeList, name: FilterExpression, vary: list[FilterExpression]):
        self.nodelist = nodelist
        self.name = name
        self.vary = vary

    def render(self, context: template.Context) -> SafeString:
        if context.get(UNCACHED_FRAGMENTS):
            return mark_safe(self.nodelist.render(context))  # noqa: S308 (as below)
        request = context.get("request")
        user = getattr(request, "user", None)
        language = get_language() or ""
        parts = (
            language,
            preferred_currency(language),
            timezone.get_current_timezone_name(),
            "user" if user is not None and user.is_authenticated else "anonymous",
            *(str(value.resolve(context)) for value in self.vary),
        )
        html: str = catalogue_cached(
            f"fragment:{self.name.resolve(context)}",
            parts,
            lambda: self.nodelist.render(context),
            request=request,
        )
        return mark_safe(html)  # noqa: S308 (the template's own output, escaped as it rendered)


@register.tag("catalogue_fragment")
def catalogue_fragment(parser: Parser, token: Token) -> CatalogueFragmentNode:
    bits = token.split_contents()
    if len(bits) < 2:
        raise template.TemplateSyntaxError(f"{bits[0]!r} needs a fragment name")
    nodelist = parser.parse(("endcatalogue_fragment",))
    parser.delete_first_token()
    return CatalogueFragmentNode(
        nodelist, parser.compile_filter(bits[1]), [parser.compile_filter(b) for b in bits[2:]]
    )

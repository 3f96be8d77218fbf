from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Catalogue"

    def ready(self) -> None:
        from marketplace.cache import connect_signals

        connect_signals()

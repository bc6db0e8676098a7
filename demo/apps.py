from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo loader (``manage.py seed_demo``): a composition root of the top layer that may import every
    app, so no lower layer needs to know the demo exists."""

    name = "demo"

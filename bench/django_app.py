"""A minimal Django project in one module: settings configured in code, one JSON view
(``bench.django_app:application``; needs Django). The same payload as bench/flask_app.py."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
    LOGGING_CONFIG=None,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402 (needs the settings above)
from django.urls import path  # noqa: E402


def index(request):
    return JsonResponse({"message": "Hello, world!", "items": [{"id": i, "name": f"item {i}"} for i in range(10)]})


urlpatterns = [path("", index)]
application = get_wsgi_application()

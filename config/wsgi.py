import os

from django.core.wsgi import get_wsgi_application

from config.long_lived import long_lived_freeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
long_lived_freeze()  # each web worker, once it has started (config/long_lived.py)

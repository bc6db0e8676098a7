import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.dev")
application = get_wsgi_application()

# The public referral redirect /r/<code> is answered before Django's request handling
# (docs/hot-path.md); every other path goes to Django unchanged.
from referrals.redirect import ReferralRedirectDispatch  # noqa: E402

application = ReferralRedirectDispatch(application)

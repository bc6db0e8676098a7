import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.dev")
application = get_wsgi_application()

# The public referral redirect /r/<code> (docs/hot-path.md) and the Stripe webhook door
# (docs/throughput.md) are answered before Django's request handling; every other path goes to Django.
from referrals.redirect import ReferralRedirectDispatch  # noqa: E402
from rewards.door import StripeWebhookDispatch  # noqa: E402

application = ReferralRedirectDispatch(StripeWebhookDispatch(application))

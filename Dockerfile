# Production image: gunicorn web, Celery worker and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=referral_platform.settings.prod
WORKDIR /app

COPY pyproject.toml README.md constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt .
COPY . .
# collectstatic needs settings to import; these values exist only for the build step.
RUN SECRET_KEY=build-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 FIELD_ENCRYPTION_KEYS=build-only \
    python manage.py collectstatic --no-input

RUN useradd --create-home app \
    && mkdir -p /var/lib/referral/click-spool && chown app /var/lib/referral/click-spool
# The redirect's click spool (docs/hot-path.md); docker-compose.yml mounts a volume here.
ENV REFERRAL_CLICK_SPOOL_DIR=/var/lib/referral/click-spool
USER app
EXPOSE 8000
CMD ["gunicorn", "referral_platform.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]

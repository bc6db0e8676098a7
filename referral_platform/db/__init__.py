"""The PostgreSQL backend of the platform: Django's, plus row-level security's per-transaction settings."""

"""docker-compose.yml is production-shaped and its commands exist; production settings pass check --deploy."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from cryptography.fernet import Fernet
from django.conf import settings
from django.urls import resolve

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services():
    services = COMPOSE["services"]

    assert set(services) >= {"postgres", "redis", "migrate", "web", "worker", "beat"}
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("web", "worker", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DJANGO_SETTINGS_MODULE"] == "referral_platform.settings.prod"


def test_compose_commands_exist_in_the_project():
    services = COMPOSE["services"]

    web = services["web"]["command"]
    assert web[0] == "gunicorn"
    module, attribute = web[1].split(":")
    assert callable(getattr(__import__(module, fromlist=[attribute]), attribute))

    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert (ROOT / "manage.py").exists()

    for name in ("worker", "beat"):
        command = services[name]["command"]
        assert command[:3] == ["celery", "-A", "referral_platform"]
        assert command[3] == name
    from referral_platform.celery import app

    assert app.main == "referral_platform"

    healthcheck = " ".join(services["web"]["healthcheck"]["test"])
    assert "/health/" in healthcheck
    assert resolve("/health/").url_name == "health"


def test_dockerfile_builds_the_image_compose_uses():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert COMPOSE["x-app"]["build"] == "."
    assert "FROM python:3.11" in dockerfile
    assert "collectstatic" in dockerfile


def test_every_dependency_is_pinned_in_constraints_txt_and_the_image_and_make_install_with_it():
    """constraints.txt (make lock) pins what the suite passed with; a requirement added to pyproject.toml without
    refreshing it would install unpinned."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "bench"):
        wanted += project["optional-dependencies"][extra]

    def name(requirement: str) -> str:
        return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pinned[package.lower().replace("_", "-")] = version
    assert [name(r) for r in wanted if name(r) not in pinned] == []

    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("$(CONSTRAINTS) -e") == 2 and "CONSTRAINTS := -c constraints.txt" in makefile


def test_production_settings_pass_check_deploy():
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="referrals.example.com",
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_a_missing_or_weak_secret():
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.prod",
        SECRET_KEY="short",
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
    )

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_settings_refuse_to_start_without_an_encryption_key():
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS="",
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
    )

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS must hold at least one Fernet key" in result.stderr

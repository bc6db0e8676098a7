#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.dev")
    from django.core.management import execute_from_command_line

    from referral_platform.devserver import answer_without_delay

    answer_without_delay()  # runserver: no 40 ms stall per response (referral_platform/devserver.py)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

"""The layer order is enforced: no module imports a higher layer, at module level or inside a function."""

from __future__ import annotations

from pathlib import Path

from referral_platform.hooks import HOOK_SPECS, hooks
from referral_platform.layers import upward_imports

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_imports_a_higher_layer():
    problems = upward_imports(ROOT)
    assert not problems, "Upward imports:\n" + "\n".join(str(problem) for problem in problems)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_names_the_file_and_line_of_an_upward_import(tmp_path):
    # A fixture tree: programs importing rewards inside a function, referrals importing rewards at
    # module level, and allowed imports (downward, relative, composition root, tests).
    root = _tree(
        tmp_path,
        {
            "programs/services.py": (
                "from referral_platform.hooks import hooks\n\n\ndef f():\n    from rewards import tasks\n"
            ),
            "referrals/selectors.py": "import rewards.models\nfrom programs.models import Program\n",
            "referrals/tests/test_x.py": "from rewards.models import Reward\n",
            "rewards/evaluation.py": "from referrals.models import Referral\nfrom . import models\n",
            "referral_platform/urls.py": "from rewards import views\n",
            "referral_platform/tenancy/seed.py": "from programs import services\n",
        },
    )

    problems = upward_imports(root)

    assert [(p.path, p.line, p.imported) for p in problems] == [
        ("referral_platform/tenancy/seed.py", 1, "programs"),
        ("programs/services.py", 5, "rewards"),
        ("referrals/selectors.py", 1, "rewards.models"),
    ]
    assert "programs/services.py:5: programs (programs) imports rewards (rewards), a higher layer" in str(problems[1])


def test_every_hook_has_a_meaning_and_registered_implementations_exist():
    assert all(spec.meaning for spec in HOOK_SPECS.values())
    # The apps below the top register what the pipeline needs.
    for name in ("participant_activated", "participant_share_links", "referral_changed", "conversion_processed"):
        assert hooks.implementations(name), name

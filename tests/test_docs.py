"""Documentation that is generated must match what generates it."""

from conftest import ROOT, cli


def test_profile_reference_is_generated_from_the_schema():
    r = cli("reference")
    assert r.returncode == 0
    committed = (ROOT / "docs" / "profile-reference.md").read_text()
    assert committed == r.stdout, "docs/profile-reference.md is stale: run `isolate reference > docs/profile-reference.md`"


def test_every_schema_field_is_in_the_reference():
    from isolate import profile

    text = (ROOT / "docs" / "profile-reference.md").read_text()
    for key in profile.FIELDS:
        assert f"`{key}`" in text, key


def test_readme_names_only_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    for sub in ("run", "explain", "profiles", "doctor", "reference"):
        assert f"isolate {sub}" in readme
        assert cli(sub, "--help").returncode == 0

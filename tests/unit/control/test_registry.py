"""Model names as Truss has them: free text, kept as written, refused only when unreadable."""

from __future__ import annotations

import pytest

from swell.control._registry import MODEL_NAME_MAX, clean_model_name, valid_environment_name


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("Test Async", "Test Async"),  # the name of 17 of Truss's own test packages
        ("  Test Async\u00a0 ", "Test Async"),  # surrounding whitespace trimmed, inner kept
        ("iris", "iris"),
        ("🦀 crab", "🦀 crab"),
        ("מודל", "מודל"),
        ("e\u0301", "\u00e9"),  # NFC: one name however it was typed
        ("../etc", "../etc"),  # URLs use ids, so a name may hold '/'
        ("-lead", "-lead"),
        ("👨\u200d👩", "👨\u200d👩"),  # a zero-width joiner is part of an emoji
        ("a" * MODEL_NAME_MAX, "a" * MODEL_NAME_MAX),
    ],
)
def test_names_are_kept_as_written(raw: str, kept: str) -> None:
    assert clean_model_name(raw) == kept


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "this one is empty"),
        ("   ", "this one is empty"),
        ("a\x00b", "U+0000 at 1 is a control"),
        ("a\n", "U+000A at 1 is a control"),
        ("tab\there", "U+0009 at 3 is a control"),
        ("\u202eevil", "U+202E at 0 is a control or format"),  # a bidirectional override
        ("a" * (MODEL_NAME_MAX + 1), f"this one has {MODEL_NAME_MAX + 1}"),
        (None, "got NoneType"),
        (7, "got int"),
    ],
)
def test_unreadable_names_are_refused_saying_what_is_allowed(raw: object, why: str) -> None:
    with pytest.raises(ValueError) as refused:
        clean_model_name(raw)
    assert why in str(refused.value)
    assert str(refused.value).startswith(f"any text of 1 to {MODEL_NAME_MAX} characters without control characters")


@pytest.mark.parametrize(("name", "valid"), [("production", True), ("canary-2", True), ("a b", False), ("🦀", False), ("", False)])
def test_environment_names_stay_url_safe(name: str, valid: bool) -> None:
    assert valid_environment_name(name) is valid

"""The words of the feedback, the self-check and the class report, in the student's language.

Each language has a folder under ``grader/locales/`` holding one TOML catalogue per domain (``report``, ``checks``
…): a table of keys to ``str.format`` templates. English is the default and the reference: every other catalogue
must hold exactly its keys (``tests/test_i18n.py`` checks it), so a missing translation fails a test, never a
student's page.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"


class UnknownLanguage(ValueError):
    pass


class Messages:
    """One domain's templates in one language; ``messages("key", name=…)`` fills a template in."""

    def __init__(self, domain: str, language: str, templates: dict[str, str]):
        self.domain, self.language, self.templates = domain, language, templates

    def __call__(self, key: str, /, **values: object) -> str:
        return self.templates[key].format(**values)


def checked_language(language: str | None) -> str:
    language = language or DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        raise UnknownLanguage(f"unknown language {language!r}: the grader speaks {', '.join(LANGUAGES)}")
    return language


@cache
def messages(domain: str, language: str | None = None) -> Messages:
    language = checked_language(language)
    catalogue = resources.files("grader") / "locales" / language / f"{domain}.toml"
    return Messages(domain, language, _flattened(tomllib.loads(catalogue.read_text(encoding="utf-8"))))


def domains() -> list[str]:
    folder = resources.files("grader") / "locales" / DEFAULT_LANGUAGE
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def _flattened(table: dict, prefix: str = "") -> dict[str, str]:
    """Nested tables become dotted keys: [best_is_production] passed = "…" is "best_is_production.passed"."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

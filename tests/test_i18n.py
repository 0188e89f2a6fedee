"""Every language's catalogues hold exactly the English keys, with the same placeholders."""

import string

import pytest

from grader import i18n


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


@pytest.mark.parametrize("language", [language for language in i18n.LANGUAGES if language != i18n.DEFAULT_LANGUAGE])
@pytest.mark.parametrize("domain", i18n.domains())
def test_catalogue_matches_english(domain, language):
    english = i18n.messages(domain, i18n.DEFAULT_LANGUAGE).templates
    translated = i18n.messages(domain, language).templates
    assert sorted(translated) == sorted(english), f"{language}/{domain}.toml: keys differ from en/{domain}.toml"
    for key, template in english.items():
        assert _placeholders(translated[key]) == _placeholders(template), f"{language}/{domain}.toml: {key}"


def test_unknown_language_is_a_clear_error():
    with pytest.raises(i18n.UnknownLanguage, match="unknown language 'fr'"):
        i18n.messages("report", "fr")


def test_a_template_is_filled_in():
    messages = i18n.Messages("demo", "en", {"runs": "{count} runs"})
    assert messages("runs", count=3) == "3 runs"

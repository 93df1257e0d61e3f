"""What a Hugging Face repository says about its model, as the Model Registry's RegisteredModel fields.

Mapped as the Model Registry's own catalog maps Hugging Face models (kubeflow/hub, catalog's Hugging Face source):

    readme         the repository's README.md (or readme.md, README), cut at README_LIMIT bytes
    license        the first `license:<id>` tag, else the card's `license`
    license_link   the card's license_link / licenseLink / license_url / licenseUrl / license, if an http(s) URL
    language       the card's `language` (a list, or one string)
    tasks          the repository's pipeline tag
    provider       the repository's author (the org)
    library_name   the repository's library, e.g. transformers
    description    the card's `description`

A value the metadata ConfigMap gives wins (job.py). Nothing here is required: a field the Hub does not give is left
out.
"""

from __future__ import annotations

from typing import Any

README_NAMES = ("README.md", "readme.md", "Readme.md", "README", "readme")
README_LIMIT = 60_000  # bytes: under the 64 KiB a MariaDB TEXT column holds
_LINK_KEYS = ("license_link", "licenseLink", "license_url", "licenseUrl", "license")


def readme_name(siblings: list[str]) -> str | None:
    return next((name for name in README_NAMES if name in siblings), None)


def registered_model_fields(info: Any, readme: str | None) -> dict[str, Any]:
    """{RegisteredModel field: value} from a huggingface_hub ModelInfo and the README's text."""
    card = _card(info)
    fields: dict[str, Any] = {}
    if readme:
        data = readme.encode()
        fields["readme"] = readme if len(data) <= README_LIMIT else data[:README_LIMIT].decode(errors="ignore")
    license_tag = next((t.split(":", 1)[1] for t in (getattr(info, "tags", None) or [])
                        if isinstance(t, str) and t.startswith("license:") and t != "license:"), None)
    if license_tag or isinstance(card.get("license"), str):
        fields["license"] = license_tag or card["license"]
    link = next((card[k] for k in _LINK_KEYS if isinstance(card.get(k), str)
                 and card[k].startswith(("http://", "https://"))), None)
    if link:
        fields["license_link"] = link
    language = card.get("language")
    languages = [language] if isinstance(language, str) else [x for x in language or [] if isinstance(x, str)]
    if languages:
        fields["language"] = languages
    if getattr(info, "pipeline_tag", None):
        fields["tasks"] = [info.pipeline_tag]
    if getattr(info, "author", None):
        fields["provider"] = info.author
    if getattr(info, "library_name", None):
        fields["library_name"] = info.library_name
    if isinstance(card.get("description"), str) and card["description"].strip():
        fields["description"] = card["description"].strip()
    return fields


def _card(info: Any) -> dict[str, Any]:
    data = getattr(info, "card_data", None)
    if data is None:
        return {}
    return data.to_dict() if hasattr(data, "to_dict") else dict(data)

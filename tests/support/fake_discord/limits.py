"""Discord's documented limits, checked the way Discord checks them (400 code 50035).

Each `check_*` function adds field errors to a `FormErrors` at the path Discord would report,
so discord.py's `HTTPException.text` reads like the real thing, e.g.
"In components.0.components.5: Must be 5 or fewer in length."
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .errors import FormErrors

Path = tuple[str | int, ...]

# Component types.
ACTION_ROW = 1
BUTTON = 2
STRING_SELECT = 3
TEXT_INPUT = 4
SELECTS = frozenset({3, 5, 6, 7, 8})
SECTION = 9
LABEL = 18
LINK_STYLE = 5
PREMIUM_STYLE = 6

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7
IS_COMPONENTS_V2 = 1 << 15

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ATTACHMENTS = 10
MAX_ROWS = 5
MAX_PER_ROW = 5
MAX_V2_COMPONENTS = 40
MAX_CUSTOM_ID = 100
MAX_BUTTON_LABEL = 80
MAX_SELECT_OPTIONS = 25
MAX_CHOICES = 25
MAX_OPTIONS = 25
MAX_STRING_OPTION = 6000
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def check_message(errors: FormErrors, body: dict[str, Any]) -> None:
    """Content, embeds and components of a message create/edit body."""
    content = body.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        errors.add(
            ("content",), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    embeds = body.get("embeds") or []
    errors.check_max_items(("embeds",), embeds, MAX_EMBEDS)
    for index, embed in enumerate(embeds):
        check_embed(errors, ("embeds", index), embed)
    total = sum(_embed_text_length(e) for e in embeds)
    if total > MAX_EMBED_TOTAL:
        errors.add(
            ("embeds",), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )
    components = body.get("components")
    if components:
        check_components(errors, components, int(body.get("flags") or 0))


def check_embed(errors: FormErrors, path: Path, embed: dict[str, Any]) -> None:
    limits = {"title": 256, "description": 4096}
    for key, high in limits.items():
        if embed.get(key) is not None:
            errors.check_length((*path, key), embed[key], 0, high)
    fields = embed.get("fields") or []
    errors.check_max_items((*path, "fields"), fields, 25)
    for index, item in enumerate(fields):
        errors.check_length((*path, "fields", index, "name"), item.get("name"), 1, 256)
        errors.check_length((*path, "fields", index, "value"), item.get("value"), 1, 1024)
    if embed.get("footer"):
        errors.check_length((*path, "footer", "text"), embed["footer"].get("text"), 1, 2048)
    if embed.get("author"):
        errors.check_length((*path, "author", "name"), embed["author"].get("name"), 1, 256)


def _embed_text_length(embed: dict[str, Any]) -> int:
    parts = [embed.get("title"), embed.get("description")]
    parts += [(embed.get("footer") or {}).get("text"), (embed.get("author") or {}).get("name")]
    for item in embed.get("fields") or []:
        parts += [item.get("name"), item.get("value")]
    return sum(len(p) for p in parts if p)


def check_components(errors: FormErrors, components: Sequence[dict[str, Any]], flags: int) -> None:
    """Rows, buttons, selects and unique custom_ids of a message's components."""
    if flags & IS_COMPONENTS_V2:
        if count_components(components) > MAX_V2_COMPONENTS:
            errors.add(("components",), "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
    else:
        errors.check_max_items(("components",), components, MAX_ROWS)
        for index, row in enumerate(components):
            if row.get("type") != ACTION_ROW:
                errors.add(
                    ("components", index, "type"),
                    "UNION_TYPE_CHOICES",
                    "Top-level components must be action rows without IS_COMPONENTS_V2.",
                )
    seen: set[str] = set()
    for path, component in walk_components(components, ("components",)):
        check_component(errors, path, component)
        custom_id = component.get("custom_id")
        if custom_id is not None:
            if custom_id in seen:
                errors.add(
                    (*path, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)


def walk_components(
    components: Sequence[dict[str, Any]], path: Path = ()
) -> list[tuple[Path, dict[str, Any]]]:
    """Every component with its error path, depth first (rows, sections, labels, containers)."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for index, component in enumerate(components):
        found += _walk_one(component, (*path, index))
    return found


def _walk_one(component: dict[str, Any], path: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = [(path, component)]
    for index, child in enumerate(component.get("components") or []):
        found += _walk_one(child, (*path, "components", index))
    for key in ("accessory", "component"):
        child = component.get(key)
        if isinstance(child, dict):
            found += _walk_one(child, (*path, key))
    return found


def count_components(components: Sequence[dict[str, Any]]) -> int:
    return len(walk_components(components))


def check_component(errors: FormErrors, path: Path, component: dict[str, Any]) -> None:
    kind = component.get("type")
    if kind == ACTION_ROW:
        _check_row(errors, path, component.get("components") or [])
    elif kind == BUTTON:
        _check_button(errors, path, component)
    elif kind in SELECTS:
        _check_select(errors, path, component)


def _check_row(errors: FormErrors, path: Path, children: Sequence[dict[str, Any]]) -> None:
    if not 1 <= len(children) <= MAX_PER_ROW:
        errors.add(
            (*path, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
        )
    kinds = {c.get("type") for c in children}
    if kinds & SELECTS and len(children) > 1:
        errors.add(
            (*path, "components"),
            "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
            "The specified component exceeds the maximum width",
        )


def _check_button(errors: FormErrors, path: Path, button: dict[str, Any]) -> None:
    style = button.get("style")
    if button.get("label") is not None:
        errors.check_length((*path, "label"), button["label"], 0, MAX_BUTTON_LABEL)
    if style == LINK_STYLE:
        if not button.get("url"):
            errors.add((*path, "url"), "BASE_TYPE_REQUIRED", "This field is required")
        if button.get("custom_id") is not None:
            errors.add(
                (*path, "custom_id"),
                "BUTTON_COMPONENT_LINK_HAS_CUSTOM_ID",
                "A link button cannot have a custom id",
            )
    elif style != PREMIUM_STYLE:
        errors.check_length((*path, "custom_id"), button.get("custom_id"), 1, MAX_CUSTOM_ID)
    if style != PREMIUM_STYLE and not button.get("label") and not button.get("emoji"):
        errors.add(
            (*path, "label"), "BUTTON_COMPONENT_INVALID_LABEL", "A label or emoji is required"
        )


def _check_select(errors: FormErrors, path: Path, select: dict[str, Any]) -> None:
    errors.check_length((*path, "custom_id"), select.get("custom_id"), 1, MAX_CUSTOM_ID)
    if select.get("placeholder") is not None:
        errors.check_length((*path, "placeholder"), select["placeholder"], 0, 150)
    low, high = select.get("min_values", 1), select.get("max_values", 1)
    if not 0 <= low <= 25 or not 1 <= high <= 25 or low > high:
        errors.add(
            (*path, "max_values"), "BASE_TYPE_BAD_INT", "min/max_values must be 0..25, min <= max"
        )
    if select.get("type") == STRING_SELECT:
        options = select.get("options") or []
        if not 1 <= len(options) <= MAX_SELECT_OPTIONS:
            errors.add(
                (*path, "options"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length."
            )
        for index, option in enumerate(options):
            for key in ("label", "value"):
                errors.check_length((*path, "options", index, key), option.get(key), 1, 100)


def check_modal(errors: FormErrors, modal: dict[str, Any]) -> None:
    """A modal callback's data: title, custom_id and 1-5 rows/labels of inputs."""
    errors.check_length(("data", "title"), modal.get("title"), 1, 45)
    errors.check_length(("data", "custom_id"), modal.get("custom_id"), 1, MAX_CUSTOM_ID)
    components = modal.get("components") or []
    if not 1 <= len(components) <= 5:
        errors.add(
            ("data", "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
        )
    for path, component in walk_components(components, ("data", "components")):
        if component.get("type") == TEXT_INPUT:
            errors.check_length((*path, "custom_id"), component.get("custom_id"), 1, MAX_CUSTOM_ID)
            if component.get("label") is not None:
                errors.check_length((*path, "label"), component["label"], 1, 45)
            if component.get("value") is not None:
                errors.check_length((*path, "value"), component["value"], 0, 4000)
        elif component.get("type") in SELECTS:
            _check_select(errors, path, component)


def check_commands(errors: FormErrors, commands: Sequence[dict[str, Any]]) -> None:
    """A bulk overwrite: at most 100 commands, unique names, valid options and choices."""
    errors.check_max_items((), commands, 100)
    names: set[tuple[int, str]] = set()
    for index, command in enumerate(commands):
        check_command(errors, (index,), command)
        key = (command.get("type", 1), command.get("name", ""))
        if key in names:
            errors.add(
                (index, "name"),
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {key[1]}",
            )
        names.add(key)


def check_command(errors: FormErrors, path: Path, command: dict[str, Any]) -> None:
    name = command.get("name") or ""
    chat_input = command.get("type", 1) == 1
    if chat_input and (not COMMAND_NAME.match(name) or name != name.lower()):
        errors.add(
            (*path, "name"),
            "APPLICATION_COMMAND_INVALID_NAME",
            f"Command name is invalid: {name!r}",
        )
    if chat_input:
        errors.check_length((*path, "description"), command.get("description"), 1, 100)
        _check_options(errors, (*path, "options"), command.get("options") or [])


def _check_options(errors: FormErrors, path: Path, options: Sequence[dict[str, Any]]) -> None:
    errors.check_max_items(path, options, MAX_OPTIONS)
    seen_optional = False
    for index, option in enumerate(options):
        here = (*path, index)
        name = option.get("name") or ""
        if not COMMAND_NAME.match(name) or name != name.lower():
            errors.add(
                (*here, "name"), "APPLICATION_COMMAND_INVALID_NAME", f"Invalid name {name!r}"
            )
        errors.check_length((*here, "description"), option.get("description"), 1, 100)
        if option.get("type") in (1, 2):
            _check_options(errors, (*here, "options"), option.get("options") or [])
            continue
        if option.get("required"):
            if seen_optional:
                errors.add(
                    (*here, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        _check_choices(errors, here, option)


def _check_choices(errors: FormErrors, path: Path, option: dict[str, Any]) -> None:
    choices = option.get("choices") or []
    errors.check_max_items((*path, "choices"), choices, MAX_CHOICES)
    if choices and option.get("autocomplete"):
        errors.add(
            (*path, "autocomplete"),
            "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
            "Autocomplete cannot be set for options with choices",
        )
    for index, choice in enumerate(choices):
        errors.check_length((*path, "choices", index, "name"), choice.get("name"), 1, 100)
        if isinstance(choice.get("value"), str):
            errors.check_length((*path, "choices", index, "value"), choice["value"], 1, 100)

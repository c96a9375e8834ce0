"""Slash-command options and modal submissions, built as Discord's client builds them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .interactions import (
    ATTACHMENT,
    BOOLEAN,
    CHANNEL,
    INTEGER,
    MENTIONABLE,
    NUMBER,
    ROLE,
    STRING,
    SUB_COMMAND,
    SUB_COMMAND_GROUP,
    USER,
)
from .messages import StoredFile
from .world import FakeChannel, FakeRole, World


class OptionBuilder:
    """Turns `{"prompt": "a cat", "image": attachment}` into typed slash options + `resolved`,
    using the option types of the command as the bot registered it, and refusing what the
    Discord client would refuse (unknown or missing required options, values out of range).
    """

    def __init__(self, world: World, channel: FakeChannel) -> None:
        self.world = world
        self.channel = channel
        self.resolved: dict[str, dict[str, Any]] = {}

    def build(
        self,
        command: dict[str, Any],
        path: list[str],
        values: Mapping[str, Any],
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        """Options for `/command path... values`, nested under subcommands in `path`."""
        definitions = command.get("options") or []
        chain: list[dict[str, Any]] = []
        for name in path:
            found = _find_option(definitions, name, (SUB_COMMAND, SUB_COMMAND_GROUP))
            if found is None:
                raise LookupError(f"/{command['name']} has no subcommand {name!r}")
            chain.append(found)
            definitions = found.get("options") or []
        options = self._leaves(command["name"], definitions, values, focused)
        for sub in reversed(chain):
            options = [{"type": sub["type"], "name": sub["name"], "options": options}]
        return options

    def _leaves(
        self,
        command_name: str,
        definitions: list[dict[str, Any]],
        values: Mapping[str, Any],
        focused: str | None,
    ) -> list[dict[str, Any]]:
        known = {
            d["name"]: d for d in definitions if d["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP)
        }
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(
                f"/{command_name} has no option(s) {sorted(unknown)}; has {sorted(known)}"
            )
        missing = [n for n, d in known.items() if d.get("required") and n not in values]
        if missing and focused is None:
            raise ValueError(f"/{command_name} requires option(s) {missing}")
        options = []
        for name, value in values.items():
            definition = known[name]
            if name == focused:
                options.append(
                    {"type": definition["type"], "name": name, "value": str(value), "focused": True}
                )
            else:
                options.append(self._option(definition, value))
        return options

    def _option(self, definition: dict[str, Any], value: Any) -> dict[str, Any]:
        kind = definition["type"]
        converters: dict[int, Callable[[dict[str, Any], Any], Any]] = {
            STRING: _string_value,
            INTEGER: _integer_value,
            NUMBER: _number_value,
            BOOLEAN: lambda _d, v: bool(v),
            USER: self._user_value,
            CHANNEL: self._channel_value,
            ROLE: self._role_value,
            MENTIONABLE: self._mentionable_value,
            ATTACHMENT: self._attachment_value,
        }
        converted = converters[kind](definition, value)
        choices = definition.get("choices")
        if choices and converted not in [c["value"] for c in choices]:
            raise ValueError(f"option {definition['name']!r}: {value!r} is not one of its choices")
        return {"type": kind, "name": definition["name"], "value": converted}

    def _resolve(self, kind: str, ident: int, data: dict[str, Any]) -> str:
        self.resolved.setdefault(kind, {})[str(ident)] = data
        return str(ident)

    def _user_value(self, _definition: dict[str, Any], value: Any) -> str:
        user = self.world.user(value)
        member = self.world.member(user)
        if member is not None and not self.channel.is_dm:
            data = member.payload(self.world.permissions_in(user, self.channel))
            data.pop("user")
            self._resolve("members", user.id, data)
        return self._resolve("users", user.id, user.payload())

    def _channel_value(self, _definition: dict[str, Any], value: Any) -> str:
        channel = self.world.channel(value)
        data = channel.payload(self.world.bot.id)
        data["permissions"] = str(self.world.permissions_in(self.world.bot, channel))
        return self._resolve("channels", channel.id, data)

    def _role_value(self, _definition: dict[str, Any], value: Any) -> str:
        if not isinstance(value, FakeRole):
            raise TypeError(f"a role option takes a FakeRole, got {value!r}")
        return self._resolve("roles", value.id, value.payload())

    def _mentionable_value(self, definition: dict[str, Any], value: Any) -> str:
        if isinstance(value, FakeRole):
            return self._role_value(definition, value)
        return self._user_value(definition, value)

    def _attachment_value(self, _definition: dict[str, Any], value: Any) -> str:
        if not isinstance(value, StoredFile):
            raise TypeError(f"an attachment option takes fake.upload(...)'s result, got {value!r}")
        return self._resolve("attachments", value.id, {**value.payload(), "ephemeral": True})


def _find_option(
    definitions: list[dict[str, Any]], name: str, types: tuple[int, ...]
) -> dict[str, Any] | None:
    for definition in definitions:
        if definition["name"] == name and definition["type"] in types:
            return definition
    return None


def _string_value(definition: dict[str, Any], value: Any) -> str:
    text = str(value)
    low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
    if not low <= len(text) <= high:
        raise ValueError(f"option {definition['name']!r} takes {low}-{high} chars, got {len(text)}")
    return text


def _check_range(definition: dict[str, Any], number: float) -> None:
    low, high = definition.get("min_value"), definition.get("max_value")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"option {definition['name']!r} takes {low}..{high}, got {number}")


def _integer_value(definition: dict[str, Any], value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"option {definition['name']!r} is an integer option, got {value!r}")
    _check_range(definition, value)
    return value


def _number_value(definition: dict[str, Any], value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"option {definition['name']!r} is a number option, got {value!r}")
    _check_range(definition, float(value))
    return float(value)


def modal_submission(modal: dict[str, Any], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `data.components` of a modal submit, mirroring the modal's layout.

    Text inputs get `value`; selects inside labels get `values` (pass a list).
    Raises ValueError for unknown fields or missing required text inputs.
    """
    fields = _modal_fields(modal.get("components") or [])
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(
            f"modal {modal.get('custom_id')!r} has no field(s) {sorted(unknown)}; "
            f"has {sorted(fields)}"
        )
    for custom_id, component in fields.items():
        if component.get("type") == 4 and component.get("required", True):
            if not values.get(custom_id):
                raise ValueError(f"modal field {custom_id!r} is required")
    return [_submitted(c, values) for c in modal.get("components") or []]


def _modal_fields(components: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    fields: dict[str, dict[str, Any]] = {}
    for component in components:
        children = component.get("components") or []
        if isinstance(component.get("component"), dict):
            children = [component["component"]]
        for child in children:
            if child.get("custom_id"):
                fields[child["custom_id"]] = child
    return fields


def _submitted_field(component: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    custom_id = component.get("custom_id")
    data: dict[str, Any] = {"type": component["type"], "custom_id": custom_id}
    if "id" in component:
        data["id"] = component["id"]
    value = values.get(custom_id or "", component.get("value") or "")
    if component["type"] == 4:
        data["value"] = value
    else:
        data["values"] = list(value) if isinstance(value, list | tuple) else []
    return data


def _submitted(component: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(component.get("component"), dict):
        return {
            "type": component["type"],
            "id": component.get("id", 0),
            "component": _submitted_field(component["component"], values),
        }
    children = [c for c in component.get("components") or [] if c.get("custom_id")]
    return {
        "type": component["type"],
        "id": component.get("id", 0),
        "components": [_submitted_field(c, values) for c in children],
    }

"""The invite URL: exactly the permissions and scopes the bot needs."""

from __future__ import annotations

import base64
import binascii

import discord

from bot.settings import Settings

SCOPES = ("bot", "applications.commands")


def required_permissions() -> discord.Permissions:
    """See channels, post results with files and embeds, and work in threads."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        embed_links=True,
        attach_files=True,
        read_message_history=True,
    )


def application_id_from_token(token: str) -> int | None:
    """A bot token starts with its user id in base64; for bots that id is the app id."""
    head = token.split(".", 1)[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=False).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(decoded) if decoded.isdigit() else None


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(
        application_id, permissions=required_permissions(), scopes=SCOPES
    )


def print_invite(settings: Settings) -> int:
    if settings.discord_token is None:
        print(MISSING_TOKEN)
        return 2
    app_id = application_id_from_token(settings.discord_token.get_secret_value())
    if app_id is None:
        print("DISCORD_TOKEN does not look like a bot token (its first part is not an id).")
        return 2
    print(invite_url(app_id))
    return 0


MISSING_TOKEN = """\
DISCORD_TOKEN is not set, so sdbot cannot log in to Discord.

1. Open https://discord.com/developers/applications and click "New Application".
2. In "Bot", click "Reset Token" and copy the token.
3. Put it in the file .env next to where you run sdbot:  DISCORD_TOKEN=your-token
   (copy .env.example to .env for every other setting).
4. Run `sdbot invite` and open the URL it prints to add the bot to your server.

Without a token you can still try generation offline:
  sdbot imagine "a lighthouse at dusk" --model tiny -o out.png"""

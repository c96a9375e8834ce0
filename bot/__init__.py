"""The Discord side of sdbot: settings, entry point, client, commands and delivery."""

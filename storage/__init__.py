"""Everything sdbot remembers: one SQLite file through aiosqlite, images on disk.

Knows nothing of Discord or torch; takes and returns plain frozen dataclasses.
"""

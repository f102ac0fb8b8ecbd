"""The command line (`wghybrid`): `table` (the subcommands and main), `status`, `commands`,
`events` (`log`, `explain`), `parse`, `context`; `_http` (the standard-library client),
`client` (the aiohttp one, for tests and tools), `_render` (tables and colour)."""

from wghybrid.cli.table import build_parser, main

__all__ = ["build_parser", "main"]

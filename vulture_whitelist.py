"""Names vulture (dead-code finder, `make lint`) cannot see used: frameworks call them.

Each line names a use vulture misses; dead code itself is removed, never listed here.
"""

# typer: every command is registered by its decorator and called by click.
from mailer import cli, settings, sync

cli.dkim_keygen
cli._main  # the group callback: --version, and the help for a bare `mailer`
# pydantic-settings: the model's configuration and its validators, called by pydantic.
settings.Settings.model_config
settings.Settings._preset
settings.Settings._limits
settings.Settings._address
settings.Settings._list_id
settings.Settings._https
settings.Settings._mailto
settings.Settings._locales
# urllib calls the redirect handler's hook by name (sync refuses every redirect).
sync._NoRedirect.redirect_request
# Starlette's router option, set as an attribute (serve.py).
_.redirect_slashes  # type: ignore[name-defined]  # noqa: F821
# The catalog test checks every Python-side label is translated (tests/test_catalogs.py).
from mailer import language

language.PYTHON_MESSAGES
# functools.lru_cache keys on it: a changed file (new mtime) is hashed again (bulletin.py).
mtime  # type: ignore[name-defined]  # noqa: F821
args  # type: ignore[name-defined]  # noqa: F821
kwargs  # type: ignore[name-defined]  # noqa: F821
# The report's figures are read by its template and by asdict() (--json).
from mailer import report

report.IssueFigures.other_failed
report.IssueFigures.pauses
settings.Settings._list_name

"""The one exception users see.

Every problem with user input (files, shapes, parameters) is raised as
:class:`LesionMixError` with a single sentence that names the file or value and
says what is wrong. The CLI prints that sentence and exits non-zero; the studio
shows it as a notification.
"""

from __future__ import annotations


class LesionMixError(ValueError):
    """A problem with the user's input, explained in one sentence."""


class LesionMixWarning(UserWarning):
    """Something the user should know that does not stop the work (one sentence, printed once)."""


class Cancelled(LesionMixError):
    """Long work stopped at the user's request (Cancel, Stop); what it would have changed is left as it was."""

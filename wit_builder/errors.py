"""User errors: the CLI prints them as one line and exits 2; bad *data* never raises these."""


class UserError(Exception):
    """A mistake the user can fix: bad path, bad config, unknown format, missing model.

    The message reads `what went wrong (what to do)`; the CLI prints `error: <message>`.
    """

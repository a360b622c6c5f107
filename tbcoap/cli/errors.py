"""What a command can fail with; main turns each into a message and an exit code."""


class CliError(Exception):
    """A failure reported as ``tbcoap: <message>`` with exit code ``code``."""

    code = 1


class UsageError(CliError):
    """The command line itself is wrong (exit 2)."""

    code = 2


class ApiError(CliError):
    """The server answered with an error: ``{"status": .., "message": ..}``."""

    def __init__(self, status, message, data=None):
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.data = data  # the answer's JSON, for answers with more to say (claim refusals)


class Unreachable(CliError):
    """No answer from the server (refused, unknown host, timeout)."""

"""Errors that carry a fix. Library code raises these; only the CLI turns them into exit codes."""


class BrtraceError(Exception):
    """An error an operator can act on: `message` says what is wrong, `hint` what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def oneline(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class KernelFeatureError(BrtraceError):
    """The running kernel lacks something brtrace needs (BTF, tracefs, a tracepoint)."""


class UsageError(BrtraceError):
    """Bad input from the command line: unknown bridge, not a bridge, bad netns."""

    exit_code = 2


class PermissionError_(BrtraceError):
    """Not root / missing capabilities."""


class BridgeGone(BrtraceError):
    """The traced bridge vanished while brtrace ran."""

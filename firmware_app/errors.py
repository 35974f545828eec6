"""The errors the phone reports to the people running it."""


class FirmwareAppError(Exception):
    """Base of every error the phone raises on purpose."""


class ConfigError(FirmwareAppError):
    """A configuration mistake: says which file, which key and what was expected."""

    def __init__(self, file: str, key: str, expected: str) -> None:
        self.file, self.key, self.expected = file, key, expected
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {expected}")


class CommandError(FirmwareAppError):
    """A command that cannot be carried out now (no call to answer, unknown action...)."""


class EngineError(FirmwareAppError):
    """The SIP engine could not start or do what it was asked."""


class NoAnswerError(FirmwareAppError):
    """The control socket gave no answer: the phone is not running, closed the connection or fell silent.

    A command already sent may still be carried out: only the phone's status or events can tell.
    """

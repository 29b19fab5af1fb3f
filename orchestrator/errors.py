"""The one exception type users see: its message is printed on one line by the CLI."""


class MedsynthError(Exception):
    """A user-facing error. The message names the file, row or key at fault."""

    def __init__(self, message: str):
        # one line, always: a multi-line message would break the CLI's "error: ..." contract
        super().__init__(" ".join(str(message).split()))

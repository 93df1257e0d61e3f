"""The few exception classes the job raises. Each carries a message meant for the person reading the log.

`__main__` maps them to exit codes: ConfigError -> 2, any other ModelSyncError -> 1.
"""


class ModelSyncError(Exception):
    """A failure with a user-facing message (one line, secrets already masked)."""


class ConfigError(ModelSyncError):
    """The configuration is wrong; nothing was done. Carries every problem found, one per line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ToolError(ModelSyncError):
    """An external binary (aws, oras, skopeo) failed; the message holds its masked stderr."""


class TransferError(ModelSyncError):
    """Moving or verifying the model's files failed."""


class CredentialsRefused(TransferError):
    """A store or registry refused the credentials given (401/403, an unknown key, a wrong secret). In preflight
    that is a configuration error (exit 2): retrying the Job cannot help."""


class RegistryError(ModelSyncError):
    """Talking to the Model Registry failed, or it refused what the job asked."""

"""The one error a privacy check raises."""


class NotPrivateError(ValueError):
    """The model, data or config cannot be trained with the DP guarantee
    that would be printed; the message says what to change."""

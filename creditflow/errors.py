"""The one exception base of creditflow; messages say what was wrong and what to do."""


class CreditflowError(Exception):
    """Base of every error creditflow raises on purpose."""

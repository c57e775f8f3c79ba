"""The base of voicemill's own errors.

Every error a stage reports as one clear line (rather than a traceback)
derives from :class:`VoicemillError`; its message names the item (file, key,
source) and the fix.
"""


class VoicemillError(RuntimeError):
    """An expected, user-fixable failure; the message names the item and the fix."""

"""Errors that carry a message meant for a person (bad input, missing file, invalid dataset...).
The CLI prints them as one line and exits 2; everything else is a bug and shows a traceback."""


class UserError(Exception):
    pass


class DatasetError(UserError):
    pass


class BundleError(UserError):
    pass


class CalibrationError(UserError):
    pass

"""Who may call duly: API tokens and their roles.

Pure parts (:mod:`.roles`, :mod:`.tokens`, :mod:`.durations`) know nothing of the database;
:mod:`.service` keeps the tokens in the store (:mod:`.schema`). The CLI and, later, the HTTP
API both go through :class:`duly.auth.service.TokenService`.
"""

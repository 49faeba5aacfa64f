"""The shared vocabulary of the server and the worker SDK: plain Python, no web framework,
no database library.

- :mod:`~joblib_app.domain.names`: room ids, full names, text and id bounds;
- :mod:`~joblib_app.domain.statuses`: task statuses and the transition table;
- :mod:`~joblib_app.domain.prefer`: the ``Prefer: wait=N`` header;
- :mod:`~joblib_app.domain.errors`: one exception class per problem kind.

Import-light on purpose: a worker process imports this and nothing of the server.
"""

"""The operations of the job system, one function each.

Every caller goes through here: the REST routes, the Socket.IO namespace, the sweeper,
the reconnect grace and the internal executors. Data flows one way: callers -> services ->
store, and services -> realtime (the outbox, events, wake-ups). Nothing here imports
``joblib_app.api``; services return rows (or plain values) and raise
:mod:`joblib_app.domain.errors`; the callers shape the answer.
"""

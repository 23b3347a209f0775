"""jupyter_server extension: the ``/dsops`` REST routes and their background jobs.

The extension app lives in ``dsops_jupyter.server.app``; this package's other modules (jobs,
store, worker, paths) stay importable without tornado.
"""

"""Local web demo: :func:`polymax.serve.app.make_server` / :func:`polymax.serve.app.serve`."""

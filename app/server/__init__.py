"""The process: ASGI application, lifespan, HTTP routes and the ``serve`` command."""

app = object()  # Bay's ASGI app

"""The HTTP edge: the /v1 and admin handlers, WebSocket, the OpenAPI document, read deadlines."""

"""HTTP API: routers, dependencies, request/response models and the error contract."""

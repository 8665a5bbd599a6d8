"""The gateway: REST API, registry, review resolutions, the live WebSocket and the outbox."""

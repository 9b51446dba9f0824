"""HTTP routers: webhooks, the Moodle-compatible endpoint, operations, health."""

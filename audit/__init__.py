"""The audit trail: every read decision and security event, append-only and hash-chained."""

"""The composition root: settings, embedded servers, ledger, gateway, HTTP API and the `hie` CLI."""

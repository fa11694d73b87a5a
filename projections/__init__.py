"""Read models built from the ledger's notification log, each tracking its ledger position."""

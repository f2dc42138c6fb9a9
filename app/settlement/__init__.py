"""The one place a job ends: its final state, its reservations, its ledger and billing rows, its event."""

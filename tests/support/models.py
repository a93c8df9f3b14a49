"""Model fixtures: see models helper."""

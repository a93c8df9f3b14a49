"""SeaweedFS fixture: see store helper."""

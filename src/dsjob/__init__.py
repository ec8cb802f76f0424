"""dsjob."""

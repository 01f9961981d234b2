"""Development tools for Timbre (local services); never deployed with the app."""

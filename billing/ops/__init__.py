"""Running the app in production: backups and restores (and, beside them, metrics and checks)."""

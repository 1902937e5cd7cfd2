"""Optional Better Auth plugins."""

"""Better Auth's two-factor plugin."""

"""Better Auth's admin plugin: banning users (user.banned, banReason, banExpires) and a sign-in gate that refuses
banned users."""

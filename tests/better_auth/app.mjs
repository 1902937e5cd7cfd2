// A real Better Auth app for the compatibility tests and the benchmark: better-auth (pinned by the Makefile into
// .tools/) on Postgres, with Redis as secondary storage unless BA_REDIS_URL is empty. Configured by environment:
//   BA_PORT, BA_DATABASE_URL, BA_REDIS_URL, BA_REDIS_PREFIX (default "better-auth:"), BETTER_AUTH_SECRET(S),
//   BA_STORE_SESSION_IN_DATABASE ("1": sessions also in SQL), BA_OPTIONS (JSON merged into the options),
//   BA_PASSWORD_HASH ("argon2id": the app hashes and verifies with @node-rs/argon2, as the README shows),
//   BA_TOOLS (the folder holding node_modules), BA_TWO_FACTOR ("1": Better Auth's twoFactor plugin, issuer "Acme Co").
// Mail is not sent: every message is kept in memory and listed by GET /test/outbox. GET /test/migrations shows what
// Better Auth's getMigrations would still change in the database for these options. Prints "ready <port>".
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.env.BA_TOOLS;
const requireTools = createRequire(join(tools, "package.json"));
const load = (name) => import(pathToFileURL(requireTools.resolve(name)).href);

const { betterAuth } = await load("better-auth");
const { toNodeHandler } = await load("better-auth/node");
const pg = (await load("pg")).default;
const Redis = (await load("ioredis")).default;

const port = Number(process.env.BA_PORT);
const baseURL = `http://127.0.0.1:${port}`;
const prefix = process.env.BA_REDIS_PREFIX ?? "better-auth:";
const outbox = [];

let secondaryStorage;
let redis;
if (process.env.BA_REDIS_URL) {
  redis = new Redis(process.env.BA_REDIS_URL);
  secondaryStorage = {
    get: (key) => redis.get(prefix + key),
    set: (key, value, ttl) => (ttl ? redis.set(prefix + key, value, "EX", ttl) : redis.set(prefix + key, value)),
    delete: (key) => redis.del(prefix + key),
    getAndDelete: (key) => redis.getdel(prefix + key),
    increment: async (key, ttl) => {
      const [[, value]] = await redis.multi().incr(prefix + key).expire(prefix + key, ttl, "NX").exec();
      return value;
    },
  };
}

let password;
if (process.env.BA_PASSWORD_HASH === "argon2id") {
  const argon2 = await load("@node-rs/argon2");
  password = {
    hash: (plain) => argon2.hash(plain.normalize("NFKC")),
    verify: ({ hash, password: plain }) => argon2.verify(hash, plain.normalize("NFKC")),
  };
}

const plugins = [];
if (process.env.BA_TWO_FACTOR === "1") {
  const { twoFactor } = await load("better-auth/plugins");
  plugins.push(twoFactor({ issuer: "Acme Co" }));
}

const extra = process.env.BA_OPTIONS ? JSON.parse(process.env.BA_OPTIONS) : {};
const pool = new pg.Pool({ connectionString: process.env.BA_DATABASE_URL, max: 10 });
export const auth = betterAuth({
  baseURL,
  trustedOrigins: [baseURL],
  database: pool,
  secondaryStorage,
  logger: { level: "error" },
  telemetry: { enabled: false },
  emailAndPassword: {
    enabled: true,
    revokeSessionsOnPasswordReset: true,
    password,
    sendResetPassword: async ({ user, url, token }) => {
      outbox.push({ kind: "reset-password", email: user.email, url, token });
    },
  },
  user: { changeEmail: { enabled: true } },
  emailVerification: {
    sendVerificationEmail: async ({ user, url, token }) => {
      outbox.push({ kind: "verify-email", email: user.email, url, token });
    },
  },
  ...(plugins.length ? { plugins } : {}),
  ...extra,
  session: { storeSessionInDatabase: process.env.BA_STORE_SESSION_IN_DATABASE === "1", ...(extra.session ?? {}) },
});

const handler = toNodeHandler(auth);
const server = createServer((req, res) => {
  if (req.url.startsWith("/test/outbox")) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(outbox));
    return;
  }
  if (req.url.startsWith("/test/migrations")) {
    migrationPlan().then(
      (plan) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(plan));
      },
      (error) => {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: String(error?.stack ?? error) }));
      },
    );
    return;
  }
  handler(req, res);
});

// What `npx auth migrate` would do to the database for these options (nothing, when the schema is complete),
// with the warnings it logs (a column of another type, a nullable required column).
async function migrationPlan() {
  const { getMigrations } = await load("better-auth/db/migration");
  const warnings = [];
  const logger = { level: "warn", log: (level, message) => warnings.push(`${level}: ${message}`) };
  const plan = await getMigrations({ ...auth.options, logger }, { throwOnUnsafe: false });
  return {
    toBeCreated: plan.toBeCreated.map((t) => t.table),
    toBeAdded: plan.toBeAdded.map((t) => ({ table: t.table, fields: Object.keys(t.fields) })),
    toBeAddedIndexes: plan.toBeAddedIndexes.map((i) => `${i.table}.${i.name}`),
    unsafeChanges: plan.unsafeChanges,
    schemaProblems: plan.schemaProblems,
    warnings,
    sql: await plan.compileMigrations(),
  };
}
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));
const stop = () => {
  server.close();
  pool.end();
  redis?.quit();
  setTimeout(() => process.exit(0), 200).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

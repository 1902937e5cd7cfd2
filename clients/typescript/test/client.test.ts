// Run against a real server: AUTHSIDECAR_TEST_ADDRESS=127.0.0.1:50051 node --test dist/test/
// (tests/e2e/test_typescript_client.py starts one and runs this; AUTHSIDECAR_TEST_UNIX_ADDRESS optionally names a
// second server listening on a unix socket).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { AuthClient, AuthSidecarError, Code, ErrorReason, fieldsOf, timestampDate } from "../src/index.js";

const address = process.env["AUTHSIDECAR_TEST_ADDRESS"];
if (!address) {
  throw new Error("set AUTHSIDECAR_TEST_ADDRESS to a running authsidecar (host:port)");
}

const email = (tag: string) => `ts-${tag}-${randomBytes(4).toString("hex")}@example.com`;

/** The AuthSidecarError `promise` rejects with. */
async function failure(promise: Promise<unknown>): Promise<AuthSidecarError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AuthSidecarError, `not an AuthSidecarError: ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("AuthClient against the real server", () => {
  let auth: AuthClient;
  before(() => {
    auth = new AuthClient(address);
  });
  after(() => {
    auth.close();
  });

  test("sign up, validate, sign in, list and revoke sessions, sign out", async () => {
    const address = email("walk");
    const signedUp = await auth.signUp({ email: address, password: "correct horse", name: "Ada" });
    assert.equal(signedUp.user.email, address);
    assert.ok(signedUp.token.length > 20);

    const current = await auth.validateSession(signedUp.token);
    assert.equal(current.user.id, signedUp.user.id);
    assert.equal(current.session.userId, signedUp.user.id);
    assert.ok(timestampDate(current.session.expiresAt!) > new Date());
    assert.deepEqual(fieldsOf(current.user), {});

    const signedIn = await auth.signIn({ email: address, password: "correct horse", rememberMe: false, userAgent: "ts" });
    assert.ok(signedIn.session);
    assert.equal((await auth.listSessions(signedIn.token)).length, 2);
    const { currentSessionId, sessions } = await auth.currentSession(signedIn.token);
    assert.equal(currentSessionId, signedIn.session.id);
    assert.ok(sessions.some((s) => s.userAgent === "ts"));
    assert.equal(await auth.revokeOtherSessions(signedIn.token), 1);

    await auth.signOut(signedIn.token);
    const error = await failure(auth.validateSession(signedIn.token));
    assert.equal(error.code, Code.Unauthenticated);
    assert.equal(error.code, 16);
    assert.equal(error.codeName, "UNAUTHENTICATED");
    assert.equal(error.reason, "INVALID_TOKEN");
    assert.equal(error.domain, "authsidecar");
    assert.ok(AuthSidecarError.is(error, "INVALID_TOKEN"));
    assert.ok(!AuthSidecarError.is(error, "SESSION_EXPIRED"));
    // the signed-up session went with revokeOtherSessions
    assert.equal((await failure(auth.validateSession(signedUp.token))).reason, "INVALID_TOKEN");
  });

  test("typed errors: USER_ALREADY_EXISTS, MISSING_FIELD, INVALID_EMAIL, INVALID_EMAIL_OR_PASSWORD", async () => {
    const address = email("errors");
    await auth.signUp({ email: address, password: "correct horse", name: "Grace" });

    const exists = await failure(auth.signUp({ email: address, password: "correct horse", name: "Grace" }));
    assert.equal(exists.code, Code.AlreadyExists);
    assert.equal(exists.codeName, "ALREADY_EXISTS");
    assert.equal(exists.reason, "USER_ALREADY_EXISTS");
    assert.equal(exists.reason, ErrorReason[ErrorReason.USER_ALREADY_EXISTS]);
    assert.ok(exists.message.length > 0);
    assert.match(String(exists), /^AuthSidecarError: ALREADY_EXISTS USER_ALREADY_EXISTS: /);

    const missing = await failure(auth.signUp({ email: email("missing"), password: "correct horse", name: "" }));
    assert.equal(missing.code, Code.InvalidArgument);
    assert.equal(missing.reason, "MISSING_FIELD");
    assert.deepEqual(missing.fieldViolations, [{ field: "name", description: "is required" }]);

    const malformed = await failure(auth.signUp({ email: "not-an-email", password: "correct horse", name: "X" }));
    assert.equal(malformed.code, Code.InvalidArgument);
    assert.equal(malformed.reason, "INVALID_EMAIL");

    const wrong = await failure(auth.signIn({ email: address, password: "wrong horse" }));
    assert.equal(wrong.code, Code.Unauthenticated);
    assert.equal(wrong.reason, "INVALID_EMAIL_OR_PASSWORD");
    const unknown = await failure(auth.signIn({ email: email("nobody"), password: "correct horse" }));
    assert.equal(unknown.reason, "INVALID_EMAIL_OR_PASSWORD");

    const verify = await failure(auth.verifyEmail("not-a-token"));
    assert.equal(verify.reason, "INVALID_TOKEN");
    const reset = await failure(auth.resetPassword("not-a-token", "battery staple 2"));
    assert.equal(reset.reason, "INVALID_TOKEN");
  });

  test("profile, password change and account deletion", async () => {
    const address = email("account");
    const signedUp = await auth.signUp({ email: address, password: "correct horse", name: "Ada", ipAddress: "203.0.113.7" });
    assert.equal((await auth.updateUser(signedUp.token, { name: "Ada L." })).name, "Ada L.");
    await auth.sendVerificationEmail(address);
    await auth.requestPasswordReset(address);

    const wrong = await failure(auth.changePassword(signedUp.token, "not it", "battery staple"));
    assert.equal(wrong.reason, "INVALID_PASSWORD");
    const changed = await auth.changePassword(signedUp.token, "correct horse", "battery staple", {
      revokeOtherSessions: true,
    });
    assert.ok(changed.token);
    assert.equal((await failure(auth.validateSession(signedUp.token))).reason, "INVALID_TOKEN");
    assert.equal((await auth.validateSession(changed.token)).user.name, "Ada L.");

    await auth.changeEmail(changed.token, `new-${address}`);
    await auth.deleteUser(changed.token, { password: "battery staple" });
    assert.equal((await failure(auth.validateSession(changed.token))).reason, "INVALID_TOKEN");
    assert.equal(
      (await failure(auth.signIn({ email: address, password: "battery staple" }))).reason,
      "INVALID_EMAIL_OR_PASSWORD",
    );
  });
});

test("an unreachable server is UNAVAILABLE with no reason", async () => {
  const auth = new AuthClient("127.0.0.1:1", { timeoutMs: 2000 });
  try {
    const error = await failure(auth.validateSession("anything"));
    assert.equal(error.code, Code.Unavailable);
    assert.equal(error.codeName, "UNAVAILABLE");
    assert.equal(error.reason, "");
  } finally {
    auth.close();
  }
});

const unixAddress = process.env["AUTHSIDECAR_TEST_UNIX_ADDRESS"];
test("a unix socket target", { skip: unixAddress ? false : "AUTHSIDECAR_TEST_UNIX_ADDRESS not set" }, async () => {
  const auth = new AuthClient(unixAddress!);
  try {
    const signedUp = await auth.signUp({ email: email("unix"), password: "correct horse", name: "Unix" });
    assert.equal((await auth.validateSession(signedUp.token)).user.id, signedUp.user.id);
  } finally {
    auth.close();
  }
});

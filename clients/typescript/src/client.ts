/**
 * A small typed wrapper over the generated service descriptors: one method per RPC, errors with their machine reason.
 *
 *   const auth = new AuthClient("127.0.0.1:50051");
 *   const signedUp = await auth.signUp({ email: "ada@example.com", password: "correct horse", name: "Ada" });
 *   const current = await auth.validateSession(signedUp.token);
 *   auth.close();
 */
import * as net from "node:net";
import type * as http2 from "node:http2";

import type { JsonObject } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import {
  AuthService,
  type ChangePasswordResponse,
  type SignInResponse,
  type SignUpResponse,
  type VerifyEmailResponse,
} from "./gen/authsidecar/v1/auth_service_pb.js";
import type { Session, User } from "./gen/authsidecar/v1/resources_pb.js";
import { SessionService, type ValidateSessionResponse } from "./gen/authsidecar/v1/session_service_pb.js";
import {
  TwoFactorService,
  type EnableTwoFactorResponse,
  type VerifyBackupCodeResponse,
  type VerifyTotpResponse,
} from "./gen/authsidecar/v1/two_factor_service_pb.js";
import { AuthSidecarError } from "./errors.js";

export interface AuthClientOptions {
  /** Deadline of every call in milliseconds (default 5000). */
  timeoutMs?: number;
  /** Sent as `authorization: Bearer <key>` when the server authenticates its callers. */
  serviceKey?: string;
  /** Options of Node's `http2.connect()`: for an `https://` target, TLS / mTLS (`ca`, `cert`, `key`, `servername`). */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Interceptors for every call (logging, tracing headers). */
  interceptors?: Interceptor[];
  /** Use this transport instead of making one (then `nodeOptions` and `interceptors` are ignored, and `close()`
   * leaves it alone). */
  transport?: Transport;
}

/** Where the end user's request came from: pass its IP, it keys the server's per-IP rate limits. */
export interface ClientInfo {
  ipAddress?: string;
  userAgent?: string;
}

export interface SignUpParams extends ClientInfo {
  email: string;
  password: string;
  name: string;
  image?: string;
  /** false: a 1-day session that is never refreshed (default true). */
  rememberMe?: boolean;
  /** Values of the server's configured additional user fields (read back with `fieldsOf(reply.user)`). */
  additionalFields?: JsonObject;
}

export interface SignInParams extends ClientInfo {
  email: string;
  password: string;
  rememberMe?: boolean;
}

/** A reply whose listed message fields the server always sets. */
export type With<T, K extends keyof T> = T & { [P in K]-?: NonNullable<T[P]> };

/** A user's or session's additional fields as plain JSON values. */
export function fieldsOf(record: User | Session): JsonObject {
  return record.additionalFields ?? {};
}

function clientContext(info: ClientInfo): { ipAddress: string; userAgent: string } {
  return { ipAddress: info.ipAddress ?? "", userAgent: info.userAgent ?? "" };
}

function present<T, K extends keyof T>(reply: T, ...keys: K[]): With<T, K> {
  for (const key of keys) {
    if (reply[key] === undefined || reply[key] === null) {
      throw new TypeError(`authsidecar reply without ${String(key)}`);
    }
  }
  return reply as With<T, K>;
}

/**
 * Client for AuthService, SessionService and (with the two_factor plugin) TwoFactorService over one HTTP/2
 * connection. `target`: "host:port" (plaintext, like the Python client's default), "http://host:port",
 * "https://host:port" (TLS; certificates in `nodeOptions`) or "unix:///path/to.sock".
 */
export class AuthClient {
  private readonly auth: Client<typeof AuthService>;
  private readonly sessions: Client<typeof SessionService>;
  private readonly twoFactor: Client<typeof TwoFactorService>;
  private readonly sessionManager: Http2SessionManager | undefined;
  private readonly callOptions: CallOptions;

  constructor(target: string, options: AuthClientOptions = {}) {
    let transport = options.transport;
    if (transport === undefined) {
      let baseUrl: string;
      let nodeOptions = options.nodeOptions ?? {};
      if (target.startsWith("unix://")) {
        const path = target.slice("unix://".length);
        baseUrl = "http://localhost";
        nodeOptions = { ...nodeOptions, createConnection: () => net.connect(path) };
      } else {
        baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
      }
      this.sessionManager = new Http2SessionManager(baseUrl, {}, nodeOptions);
      transport = createGrpcTransport({
        baseUrl,
        sessionManager: this.sessionManager,
        interceptors: options.interceptors ?? [],
      });
    }
    this.auth = createClient(AuthService, transport);
    this.sessions = createClient(SessionService, transport);
    this.twoFactor = createClient(TwoFactorService, transport);
    this.callOptions = {
      timeoutMs: options.timeoutMs ?? 5000,
      ...(options.serviceKey ? { headers: { authorization: `Bearer ${options.serviceKey}` } } : {}),
    };
  }

  /** Close the connection (pending calls fail). */
  close(): void {
    this.sessionManager?.abort();
  }

  private async call<R>(invoke: (options: CallOptions) => Promise<R>): Promise<R> {
    try {
      return await invoke(this.callOptions);
    } catch (error) {
      throw AuthSidecarError.from(error);
    }
  }

  /** Create a user (and a session unless auto sign-in is off or verification is required: then `token` is ""). */
  async signUp(params: SignUpParams): Promise<With<SignUpResponse, "user">> {
    const { email, password, name, image = "", rememberMe, additionalFields } = params;
    const reply = await this.call((o) =>
      this.auth.signUp(
        { email, password, name, image, rememberMe, additionalFields, client: clientContext(params) },
        o,
      ),
    );
    return present(reply, "user");
  }

  /** Check a password; returns user, session and token, or (two_factor plugin) `reply.challenge` to complete with
   * `verifyTotp` / `verifyBackupCode`. */
  async signIn(params: SignInParams): Promise<SignInResponse> {
    const { email, password, rememberMe } = params;
    return this.call((o) => this.auth.signIn({ email, password, rememberMe, client: clientContext(params) }, o));
  }

  /** End a session. */
  async signOut(token: string): Promise<void> {
    await this.call((o) => this.auth.signOut({ token }, o));
  }

  /** Token -> session + user; throws AuthSidecarError (reason INVALID_TOKEN / SESSION_EXPIRED). In the Better Auth
   * profile `token` may also be the session cookie's signed value, or pass a Cookie header as `cookie`. */
  async validateSession(
    token: string,
    options: { cookie?: string } = {},
  ): Promise<With<ValidateSessionResponse, "session" | "user">> {
    const reply = await this.call((o) =>
      this.sessions.validateSession({ token, cookie: options.cookie ?? "" }, o),
    );
    return present(reply, "session", "user");
  }

  /** The user's active sessions (`currentSession` tells which one is the caller's). */
  async listSessions(token: string): Promise<Session[]> {
    return (await this.call((o) => this.sessions.listSessions({ token }, o))).sessions;
  }

  /** The id of the token's own session, and the user's active sessions. */
  async currentSession(token: string): Promise<{ currentSessionId: string; sessions: Session[] }> {
    const reply = await this.call((o) => this.sessions.listSessions({ token }, o));
    return { currentSessionId: reply.currentSessionId, sessions: reply.sessions };
  }

  /** Revoke one of the user's sessions. */
  async revokeSession(token: string, sessionId: string): Promise<void> {
    await this.call((o) => this.sessions.revokeSession({ token, sessionId }, o));
  }

  /** Revoke all but this session; returns how many. */
  async revokeOtherSessions(token: string): Promise<number> {
    return (await this.call((o) => this.sessions.revokeOtherSessions({ token }, o))).revokedCount;
  }

  /** Revoke all of the user's sessions; returns how many. */
  async revokeSessions(token: string): Promise<number> {
    return (await this.call((o) => this.sessions.revokeSessions({ token }, o))).revokedCount;
  }

  /** Queue a verification message (same answer whether or not the address exists). */
  async sendVerificationEmail(email: string, client: ClientInfo = {}): Promise<void> {
    await this.call((o) => this.auth.sendVerificationEmail({ email, client: clientContext(client) }, o));
  }

  /** Consume a verification (or email change) token. */
  async verifyEmail(token: string, client: ClientInfo = {}): Promise<VerifyEmailResponse> {
    return this.call((o) => this.auth.verifyEmail({ token, client: clientContext(client) }, o));
  }

  /** Queue a reset message (same answer whether or not the address exists). */
  async requestPasswordReset(email: string, client: ClientInfo = {}): Promise<void> {
    await this.call((o) => this.auth.requestPasswordReset({ email, client: clientContext(client) }, o));
  }

  /** Set a new password with a reset token. */
  async resetPassword(token: string, newPassword: string, client: ClientInfo = {}): Promise<void> {
    await this.call((o) => this.auth.resetPassword({ token, newPassword, client: clientContext(client) }, o));
  }

  /** Change the password; with `revokeOtherSessions`, the reply carries the replacement session token. */
  async changePassword(
    token: string,
    currentPassword: string,
    newPassword: string,
    options: ClientInfo & { revokeOtherSessions?: boolean } = {},
  ): Promise<ChangePasswordResponse> {
    const revokeOtherSessions = options.revokeOtherSessions ?? false;
    return this.call((o) =>
      this.auth.changePassword(
        { token, currentPassword, newPassword, revokeOtherSessions, client: clientContext(options) },
        o,
      ),
    );
  }

  /** Start an email change: an approval link to a verified current address first (or give the current password),
   * then a confirmation to the new address; the change applies when it is confirmed. */
  async changeEmail(
    token: string,
    newEmail: string,
    options: ClientInfo & { currentPassword?: string } = {},
  ): Promise<void> {
    const currentPassword = options.currentPassword ?? "";
    await this.call((o) =>
      this.auth.changeEmail({ token, newEmail, currentPassword, client: clientContext(options) }, o),
    );
  }

  /** Set the fields given (image "" clears it; an additional field set to null clears it); returns the user. */
  async updateUser(
    token: string,
    changes: { name?: string; image?: string; additionalFields?: JsonObject },
  ): Promise<User> {
    const { name, image, additionalFields } = changes;
    const reply = await this.call((o) => this.auth.updateUser({ token, name, image, additionalFields }, o));
    return present(reply, "user").user;
  }

  /** Delete the account (password, or a fresh session). */
  async deleteUser(token: string, options: ClientInfo & { password?: string } = {}): Promise<void> {
    const password = options.password ?? "";
    await this.call((o) => this.auth.deleteUser({ token, password, client: clientContext(options) }, o));
  }

  // -- two_factor plugin ------------------------------------------------------------------------------------------

  /** Start enrolment: `reply.totpUri` (show it as a QR code) and `reply.backupCodes` (show once). */
  async enableTwoFactor(
    token: string,
    password: string,
    options: ClientInfo & { issuer?: string } = {},
  ): Promise<EnableTwoFactorResponse> {
    const issuer = options.issuer ?? "";
    return this.call((o) =>
      this.twoFactor.enableTwoFactor({ token, password, issuer, client: clientContext(options) }, o),
    );
  }

  /** Finish enrolment with a code from the authenticator app; two-factor authentication is then on. */
  async confirmTwoFactor(token: string, code: string): Promise<User> {
    return present(await this.call((o) => this.twoFactor.confirmTwoFactor({ token, code }, o)), "user").user;
  }

  /** Complete a sign-in challenge with a TOTP code; returns user, session and token. */
  async verifyTotp(challenge: string, code: string, client: ClientInfo = {}): Promise<VerifyTotpResponse> {
    return this.call((o) => this.twoFactor.verifyTotp({ challenge, code, client: clientContext(client) }, o));
  }

  /** Complete a sign-in challenge with a backup code (each works once). */
  async verifyBackupCode(challenge: string, code: string, client: ClientInfo = {}): Promise<VerifyBackupCodeResponse> {
    return this.call((o) =>
      this.twoFactor.verifyBackupCode({ challenge, code, client: clientContext(client) }, o),
    );
  }

  /** Turn two-factor authentication off. */
  async disableTwoFactor(token: string, password: string, client: ClientInfo = {}): Promise<User> {
    const reply = await this.call((o) =>
      this.twoFactor.disableTwoFactor({ token, password, client: clientContext(client) }, o),
    );
    return present(reply, "user").user;
  }

  /** Replace the backup codes; returns the new ones. */
  async generateBackupCodes(token: string, password: string, client: ClientInfo = {}): Promise<string[]> {
    const reply = await this.call((o) =>
      this.twoFactor.generateBackupCodes({ token, password, client: clientContext(client) }, o),
    );
    return reply.backupCodes;
  }
}

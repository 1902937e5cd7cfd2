import { Code, ConnectError } from "@connectrpc/connect";

import { ErrorReason } from "./gen/authsidecar/v1/error_reason_pb.js";
import { Code as RpcCode } from "./gen/google/rpc/code_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** A reason the server sends in google.rpc.ErrorInfo ("INVALID_TOKEN", ...): ErrorReason's names. */
export type ErrorReasonName = Exclude<keyof typeof ErrorReason, "UNSPECIFIED">;

/** A canonical gRPC status code name ("UNAUTHENTICATED", ...). */
export type CodeName = keyof typeof RpcCode;

/** One google.rpc.BadRequest field violation. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/**
 * A failed call: the gRPC code, the google.rpc.ErrorInfo reason (e.g. "INVALID_TOKEN"), its metadata, and the
 * BadRequest / RetryInfo details when the server sent them. `message` is the server's message. Every error the
 * client throws is one of these (a refused connection is UNAVAILABLE with reason "").
 */
export class AuthSidecarError extends Error {
  override readonly name = "AuthSidecarError";
  /** The gRPC status code (Connect's `Code`; the numbers are gRPC's, e.g. `Code.Unauthenticated` = 16). */
  readonly code: Code;
  /** The code's canonical name, e.g. "UNAUTHENTICATED". */
  readonly codeName: CodeName;
  /** ErrorInfo.reason ("" when the error carries no ErrorInfo, e.g. the server is unreachable). A reason newer than
   * this client is still passed through as a string. */
  readonly reason: ErrorReasonName | "" | (string & {});
  /** ErrorInfo.domain ("authsidecar"). */
  readonly domain: string;
  /** ErrorInfo.metadata (e.g. `request_id` of an INTERNAL error, matching the server's log line). */
  readonly metadata: Readonly<Record<string, string>>;
  /** BadRequest field violations (bad input). */
  readonly fieldViolations: readonly FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds (refusals under load, backend outages), else undefined. */
  readonly retryDelayMs: number | undefined;

  constructor(cause: ConnectError) {
    super(cause.rawMessage, { cause });
    this.code = cause.code;
    this.codeName = (RpcCode[cause.code] as CodeName | undefined) ?? "UNKNOWN";
    const info = cause.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = cause
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    const delay = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs = delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined;
  }

  /** Any thrown value as an AuthSidecarError (a ConnectError keeps its code and details; anything else is
   * Connect's mapping, usually UNKNOWN or UNAVAILABLE). */
  static from(error: unknown): AuthSidecarError {
    return error instanceof AuthSidecarError ? error : new AuthSidecarError(ConnectError.from(error));
  }

  /** Whether `error` is an AuthSidecarError, optionally with this reason: `AuthSidecarError.is(e, "INVALID_TOKEN")`. */
  static is(error: unknown, reason?: ErrorReasonName): error is AuthSidecarError {
    return error instanceof AuthSidecarError && (reason === undefined || error.reason === reason);
  }

  override toString(): string {
    return `${this.name}: ${this.codeName}${this.reason ? ` ${this.reason}` : ""}: ${this.message}`;
  }
}

export { Code };

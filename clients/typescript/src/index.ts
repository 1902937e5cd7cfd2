/**
 * TypeScript client for authsidecar: the generated messages and service descriptors (src/gen, from proto/ with
 * protobuf-es; never hand-edited) and a small typed wrapper, `AuthClient`, whose failures are `AuthSidecarError`s
 * carrying the google.rpc.ErrorInfo reason.
 */
export { AuthClient, fieldsOf } from "./client.js";
export type { AuthClientOptions, ClientInfo, SignInParams, SignUpParams, With } from "./client.js";
export { AuthSidecarError, Code } from "./errors.js";
export type { CodeName, ErrorReasonName, FieldViolation } from "./errors.js";
export { timestampDate } from "@bufbuild/protobuf/wkt";

export * from "./gen/authsidecar/v1/auth_service_pb.js";
export * from "./gen/authsidecar/v1/error_reason_pb.js";
export * from "./gen/authsidecar/v1/resources_pb.js";
export * from "./gen/authsidecar/v1/session_service_pb.js";
export * from "./gen/authsidecar/v1/two_factor_service_pb.js";

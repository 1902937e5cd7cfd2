package authsidecar

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang/protobuf/ptypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/authsidecar/authsidecar/clients/go/authsidecarv1"
)

// Domain is the google.rpc.ErrorInfo domain of every authsidecar error.
const Domain = "authsidecar"

// FieldViolation is one entry of a google.rpc.BadRequest detail (bad input).
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed call: the gRPC code and message, and the google.rpc.ErrorInfo the server attaches to every
// error (Reason is the ErrorReason name without its ERROR_REASON_ prefix, e.g. "INVALID_TOKEN"). Every method of
// Client returns one for a server-side failure; get it with errors.As or use ReasonOf / CodeOf.
type Error struct {
	Code            codes.Code
	Message         string
	Reason          string            // ErrorInfo.reason; "" when the status carried no ErrorInfo
	Domain          string            // ErrorInfo.domain ("authsidecar")
	Metadata        map[string]string // ErrorInfo.metadata (e.g. "request_id" for INTERNAL)
	FieldViolations []FieldViolation  // google.rpc.BadRequest, for INVALID_ARGUMENT
	RetryDelay      time.Duration     // google.rpc.RetryInfo (load shedding, outages); 0 when absent
	status          *status.Status
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("authsidecar: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("authsidecar: %s %s: %s", e.Code, e.Reason, e.Message)
}

// GRPCStatus lets status.FromError, status.Code and grpc middleware see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// ErrorReason is Reason as the generated enum (ErrorReason_ERROR_REASON_UNSPECIFIED when unknown).
func (e *Error) ErrorReason() v1.ErrorReason {
	return v1.ErrorReason(v1.ErrorReason_value["ERROR_REASON_"+e.Reason])
}

// Is reports whether target is an *Error with the same Reason (and the same Code, when target's is not OK), so
// errors.Is(err, &authsidecar.Error{Reason: authsidecar.ReasonInvalidToken}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Reason == "" {
		return false
	}
	return t.Reason == e.Reason && (t.Code == codes.OK || t.Code == e.Code)
}

// FromError converts a gRPC error (for example one returned by the generated stubs in Client.Auth) to *Error.
// It returns nil for nil, and false for an error that carries no gRPC status.
func FromError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var already *Error
	if errors.As(err, &already) {
		return already, true
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Proto().GetDetails() {
		name := detail.GetTypeUrl()[strings.LastIndex(detail.GetTypeUrl(), "/")+1:]
		switch name {
		case "google.rpc.ErrorInfo":
			var info errdetails.ErrorInfo
			if ptypes.UnmarshalAny(detail, &info) == nil {
				e.Reason, e.Domain, e.Metadata = info.GetReason(), info.GetDomain(), info.GetMetadata()
			}
		case "google.rpc.BadRequest":
			var bad errdetails.BadRequest
			if ptypes.UnmarshalAny(detail, &bad) == nil {
				for _, v := range bad.GetFieldViolations() {
					e.FieldViolations = append(e.FieldViolations, FieldViolation{v.GetField(), v.GetDescription()})
				}
			}
		case "google.rpc.RetryInfo":
			var retry errdetails.RetryInfo
			if ptypes.UnmarshalAny(detail, &retry) == nil {
				if d, err := ptypes.Duration(retry.GetRetryDelay()); err == nil {
					e.RetryDelay = d
				}
			}
		}
	}
	return e, true
}

// ReasonOf is the ErrorInfo reason of err ("INVALID_TOKEN", ...), or "" when err is nil or carries none.
func ReasonOf(err error) string {
	if e, ok := FromError(err); ok {
		return e.Reason
	}
	return ""
}

// CodeOf is the gRPC code of err: OK for nil, Unknown for an error without a gRPC status.
func CodeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if e, ok := FromError(err); ok {
		return e.Code
	}
	return codes.Unknown
}

// HasReason reports whether err carries the given ErrorInfo reason.
func HasReason(err error, reason string) bool { return err != nil && ReasonOf(err) == reason }

// Reasons the server sends (proto/authsidecar/v1/error_reason.proto without the ERROR_REASON_ prefix); the list
// is not closed: compare with ReasonOf, or use Error.ErrorReason for the generated enum.
const (
	ReasonMissingField           = "MISSING_FIELD"
	ReasonValidationError        = "VALIDATION_ERROR"
	ReasonInvalidEmail           = "INVALID_EMAIL"
	ReasonPasswordTooShort       = "PASSWORD_TOO_SHORT"
	ReasonPasswordTooLong        = "PASSWORD_TOO_LONG"
	ReasonUserAlreadyExists      = "USER_ALREADY_EXISTS"
	ReasonInvalidEmailOrPassword = "INVALID_EMAIL_OR_PASSWORD"
	ReasonInvalidToken           = "INVALID_TOKEN"
	ReasonSessionExpired         = "SESSION_EXPIRED"
	ReasonSessionNotFound        = "SESSION_NOT_FOUND"
	ReasonTokenExpired           = "TOKEN_EXPIRED"
	ReasonInvalidPassword        = "INVALID_PASSWORD"
	ReasonEmailNotVerified       = "EMAIL_NOT_VERIFIED"
	ReasonSessionNotFresh        = "SESSION_NOT_FRESH"
	ReasonTooManyRequests        = "TOO_MANY_REQUESTS"
	ReasonRateLimited            = "RATE_LIMITED"
	ReasonCallerNotAuthenticated = "CALLER_NOT_AUTHENTICATED"
	ReasonCallerNotAllowed       = "CALLER_NOT_ALLOWED"
	ReasonBackendUnavailable     = "BACKEND_UNAVAILABLE"
	ReasonInvalidTwoFactorCode   = "INVALID_TWO_FACTOR_CODE"
)

// wrap turns a gRPC error into *Error (other errors pass through).
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := FromError(err); ok {
		return e
	}
	return err
}

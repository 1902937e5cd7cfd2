package authsidecar

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang/protobuf/ptypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/authsidecar/authsidecar/clients/go/authsidecarv1"
)

// A status as the server sends it: ErrorInfo, BadRequest and RetryInfo details.
func richStatus(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.InvalidArgument, "name is required").WithDetails(
		&errdetails.ErrorInfo{Reason: "MISSING_FIELD", Domain: Domain, Metadata: map[string]string{"field": "name"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "name", Description: "is required"}}},
		&errdetails.RetryInfo{RetryDelay: ptypes.DurationProto(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestFromErrorDecodesDetails(t *testing.T) {
	e, ok := FromError(richStatus(t))
	if !ok {
		t.Fatal("not a status error")
	}
	if e.Code != codes.InvalidArgument || e.Reason != ReasonMissingField || e.Domain != Domain || e.Message != "name is required" {
		t.Fatalf("decoded %+v", e)
	}
	if e.Metadata["field"] != "name" || len(e.FieldViolations) != 1 || e.FieldViolations[0] != (FieldViolation{"name", "is required"}) {
		t.Fatalf("details %+v", e)
	}
	if e.RetryDelay != 1500*time.Millisecond {
		t.Fatalf("retry delay %v", e.RetryDelay)
	}
	if e.ErrorReason() != v1.ErrorReason_ERROR_REASON_MISSING_FIELD {
		t.Fatalf("enum %v", e.ErrorReason())
	}
	if got := e.Error(); got != "authsidecar: InvalidArgument MISSING_FIELD: name is required" {
		t.Fatalf("message %q", got)
	}
	if status.Code(e) != codes.InvalidArgument { // GRPCStatus keeps grpc's helpers working
		t.Fatalf("status.Code %v", status.Code(e))
	}
}

func TestErrorsAsIsAndHelpers(t *testing.T) {
	wrapped := fmt.Errorf("signing up: %w", wrap(richStatus(t)))
	var e *Error
	if !errors.As(wrapped, &e) || e.Reason != ReasonMissingField {
		t.Fatalf("errors.As: %v", wrapped)
	}
	if !errors.Is(wrapped, &Error{Reason: ReasonMissingField}) || !errors.Is(wrapped, &Error{Code: codes.InvalidArgument, Reason: ReasonMissingField}) {
		t.Fatal("errors.Is by reason")
	}
	if errors.Is(wrapped, &Error{Reason: ReasonInvalidToken}) || errors.Is(wrapped, &Error{Code: codes.NotFound, Reason: ReasonMissingField}) {
		t.Fatal("errors.Is matched another reason or code")
	}
	if ReasonOf(wrapped) != ReasonMissingField || CodeOf(wrapped) != codes.InvalidArgument || !HasReason(wrapped, ReasonMissingField) {
		t.Fatal("helpers on a wrapped *Error")
	}
	if ReasonOf(richStatus(t)) != ReasonMissingField { // a raw grpc error (e.g. from Client.Auth)
		t.Fatal("ReasonOf on a raw status error")
	}
	plain := errors.New("boom")
	if ReasonOf(plain) != "" || CodeOf(plain) != codes.Unknown || ReasonOf(nil) != "" || CodeOf(nil) != codes.OK || HasReason(nil, "") {
		t.Fatal("helpers on non-gRPC errors")
	}
	if wrap(plain) != plain || wrap(nil) != nil {
		t.Fatal("wrap must pass other errors through")
	}
	bare := wrap(status.Error(codes.Unavailable, "down")).(*Error)
	if bare.Reason != "" || bare.Error() != "authsidecar: Unavailable: down" {
		t.Fatalf("no details: %+v", bare)
	}
}

func TestReasonConstantsAreEnumValues(t *testing.T) {
	for _, reason := range []string{ReasonMissingField, ReasonValidationError, ReasonInvalidEmail, ReasonPasswordTooShort,
		ReasonPasswordTooLong, ReasonUserAlreadyExists, ReasonInvalidEmailOrPassword, ReasonInvalidToken,
		ReasonSessionExpired, ReasonSessionNotFound, ReasonTokenExpired, ReasonInvalidPassword, ReasonEmailNotVerified,
		ReasonSessionNotFresh, ReasonTooManyRequests, ReasonRateLimited, ReasonCallerNotAuthenticated,
		ReasonCallerNotAllowed, ReasonBackendUnavailable, ReasonInvalidTwoFactorCode} {
		if _, ok := v1.ErrorReason_value["ERROR_REASON_"+reason]; !ok {
			t.Errorf("%s is not in error_reason.proto", reason)
		}
	}
}

func TestDialPlaintextOnlyForLoopback(t *testing.T) {
	for target, local := range map[string]bool{
		"127.0.0.1:50051": true, "localhost:50051": true, "[::1]:50051": true, "dns:///localhost:1": true,
		"unix:///run/authsidecar.sock": true, "10.0.0.5:50051": false, "auth.internal:50051": false,
	} {
		if isLocal(target) != local {
			t.Errorf("isLocal(%q) != %v", target, local)
		}
	}
	if _, err := Dial("auth.internal:50051"); err == nil {
		t.Fatal("plaintext to a remote host must need WithInsecure")
	}
	client, err := Dial("auth.internal:50051", WithInsecure(), WithServiceKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
}

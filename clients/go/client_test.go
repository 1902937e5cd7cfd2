package authsidecar_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	authsidecar "github.com/authsidecar/authsidecar/clients/go"
	v1 "github.com/authsidecar/authsidecar/clients/go/authsidecarv1"
)

// These tests talk to a real server: tests/e2e/test_go_client.py starts one and sets the variables.
func address(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Skipf("%s is not set (run through `make test` / tests/e2e/test_go_client.py)", name)
	}
	return value
}

func randomEmail(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "go-" + hex.EncodeToString(b) + "@example.com"
}

// mustFail checks err's code and reason through errors.As.
func mustFail(t *testing.T, err error, code codes.Code, reason string) *authsidecar.Error {
	t.Helper()
	var e *authsidecar.Error
	if !errors.As(err, &e) {
		t.Fatalf("want %s %s, got %v", code, reason, err)
	}
	if e.Code != code || e.Reason != reason || e.Domain != authsidecar.Domain {
		t.Fatalf("want %s %s, got %s %s (domain %q): %s", code, reason, e.Code, e.Reason, e.Domain, e.Message)
	}
	return e
}

func TestAgainstServer(t *testing.T) {
	auth, err := authsidecar.Dial(address(t, "AUTHSIDECAR_TEST_ADDRESS"))
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	ctx := context.Background()
	email := randomEmail(t)

	signedUp, err := auth.SignUp(ctx, email, "correct horse", "Ada", authsidecar.WithUserAgent("go-test"))
	if err != nil {
		t.Fatal(err)
	}
	current, err := auth.ValidateSession(ctx, signedUp.Token)
	if err != nil {
		t.Fatal(err)
	}
	if current.User.Email != email || current.Session.Id != signedUp.Session.Id || !current.Session.ExpiresAt.AsTime().After(time.Now()) {
		t.Fatalf("validated %v", current)
	}

	_, err = auth.SignUp(ctx, email, "correct horse", "Ada again")
	mustFail(t, err, codes.AlreadyExists, authsidecar.ReasonUserAlreadyExists)
	_, err = auth.SignUp(ctx, randomEmail(t), "correct horse", "")
	bad := mustFail(t, err, codes.InvalidArgument, authsidecar.ReasonMissingField)
	if len(bad.FieldViolations) != 1 || bad.FieldViolations[0].Field != "name" {
		t.Fatalf("field violations %+v", bad.FieldViolations)
	}
	_, err = auth.SignIn(ctx, email, "wrong password")
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidEmailOrPassword)

	signedIn, err := auth.SignIn(ctx, email, "correct horse", authsidecar.RememberMe(false), authsidecar.WithClientIP("203.0.113.7"))
	if err != nil {
		t.Fatal(err)
	}
	listed, err := auth.ListSessions(ctx, signedIn.Token)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.Sessions) != 2 || listed.CurrentSessionId != signedIn.Session.Id {
		t.Fatalf("sessions %v", listed)
	}

	// Revoke the first session from the second: its token stops validating.
	if err := auth.RevokeSession(ctx, signedIn.Token, signedUp.Session.Id); err != nil {
		t.Fatal(err)
	}
	_, err = auth.ValidateSession(ctx, signedUp.Token)
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidToken)
	if !errors.Is(err, &authsidecar.Error{Reason: authsidecar.ReasonInvalidToken}) || authsidecar.ReasonOf(err) != "INVALID_TOKEN" {
		t.Fatalf("errors.Is / ReasonOf on %v", err)
	}
	err = auth.RevokeSession(ctx, signedIn.Token, "no-such-session")
	mustFail(t, err, codes.NotFound, authsidecar.ReasonSessionNotFound)

	user, err := auth.UpdateUser(ctx, signedIn.Token, authsidecar.WithName("Ada L."))
	if err != nil || user.Name != "Ada L." {
		t.Fatalf("update: %v %v", user, err)
	}
	_, err = auth.ChangePassword(ctx, signedIn.Token, "not it", "battery staple", false)
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidPassword)
	changed, err := auth.ChangePassword(ctx, signedIn.Token, "correct horse", "battery staple", true)
	if err != nil || changed.Token == "" {
		t.Fatalf("change password: %v %v", changed, err)
	}
	if _, err := auth.ValidateSession(ctx, changed.Token); err != nil {
		t.Fatal(err)
	}

	// A second session, then revoke the others, then all.
	again, err := auth.SignIn(ctx, email, "battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := auth.RevokeOtherSessions(ctx, again.Token); err != nil || n != 1 {
		t.Fatalf("revoke others: %d %v", n, err)
	}
	if n, err := auth.RevokeSessions(ctx, again.Token); err != nil || n != 1 {
		t.Fatalf("revoke all: %d %v", n, err)
	}
	_, err = auth.ValidateSession(ctx, again.Token)
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidToken)

	// Sign out; email flows answer the same whether or not the address exists.
	last, err := auth.SignIn(ctx, email, "battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SendVerificationEmail(ctx, email); err != nil {
		t.Fatal(err)
	}
	if err := auth.RequestPasswordReset(ctx, randomEmail(t)); err != nil {
		t.Fatal(err)
	}
	err = auth.ResetPassword(ctx, "not-a-token", "battery staple 2")
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidToken)
	if err := auth.SignOut(ctx, last.Token); err != nil {
		t.Fatal(err)
	}
	_, err = auth.ValidateSession(ctx, last.Token)
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidToken)

	// The generated stubs are there too; FromError / ReasonOf decode their errors.
	_, err = auth.Sessions.ValidateSession(ctx, &v1.ValidateSessionRequest{})
	if authsidecar.ReasonOf(err) != authsidecar.ReasonMissingField || authsidecar.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("raw stub error %v", err)
	}

	final, err := auth.SignIn(ctx, email, "battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.DeleteUser(ctx, final.Token, "battery staple"); err != nil {
		t.Fatal(err)
	}
	_, err = auth.SignIn(ctx, email, "battery staple")
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidEmailOrPassword)
}

// A TLS server that authenticates callers by service key (allowed: ValidateSession only).
func TestTLSAndServiceKey(t *testing.T) {
	target := address(t, "AUTHSIDECAR_TEST_TLS_ADDRESS")
	creds, err := credentials.NewClientTLSFromFile(address(t, "AUTHSIDECAR_TEST_CA_FILE"), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	anonymous, err := authsidecar.Dial(target, authsidecar.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	_, err = anonymous.ValidateSession(ctx, "whatever")
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonCallerNotAuthenticated)

	keyed, err := authsidecar.Dial(target, authsidecar.WithTransportCredentials(creds),
		authsidecar.WithServiceKey(address(t, "AUTHSIDECAR_TEST_SERVICE_KEY")), authsidecar.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer keyed.Close()
	_, err = keyed.ValidateSession(ctx, "not-a-token") // past caller authentication: the token is what fails
	mustFail(t, err, codes.Unauthenticated, authsidecar.ReasonInvalidToken)
	_, err = keyed.SignUp(ctx, randomEmail(t), "correct horse", "Eve")
	mustFail(t, err, codes.PermissionDenied, authsidecar.ReasonCallerNotAllowed)
}

// Package authsidecar is a thin Go client for the authsidecar gRPC authentication sidecar: one method per RPC over
// the generated stubs in authsidecarv1, and errors as *Error carrying the google.rpc.ErrorInfo reason.
//
//	auth, err := authsidecar.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer auth.Close()
//	signedUp, err := auth.SignUp(ctx, "ada@example.com", "correct horse", "Ada")
//	current, err := auth.ValidateSession(ctx, signedUp.Token)
//	if authsidecar.ReasonOf(err) == authsidecar.ReasonInvalidToken { ... }
package authsidecar

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	v1 "github.com/authsidecar/authsidecar/clients/go/authsidecarv1"
)

// DefaultTimeout bounds each call whose context has no deadline (change it with WithTimeout).
const DefaultTimeout = 5 * time.Second

// Client calls AuthService, SessionService and (with the server's two_factor plugin) TwoFactorService over one
// connection. The generated stubs are exported for RPCs or fields the wrapper does not cover; convert their
// errors with FromError.
type Client struct {
	conn      *grpc.ClientConn
	timeout   time.Duration
	Auth      v1.AuthServiceClient
	Sessions  v1.SessionServiceClient
	TwoFactor v1.TwoFactorServiceClient
}

type dialConfig struct {
	creds       credentials.TransportCredentials
	insecure    bool
	serviceKey  string
	timeout     time.Duration
	dialOptions []grpc.DialOption
}

// Option configures Dial.
type Option func(*dialConfig)

// WithTransportCredentials uses TLS (or mTLS) credentials, e.g. credentials.NewClientTLSFromFile("ca.pem", "").
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *dialConfig) { c.creds = creds }
}

// WithTLSConfig uses TLS with this configuration (RootCAs for a private CA, Certificates for mTLS).
func WithTLSConfig(config *tls.Config) Option {
	return func(c *dialConfig) { c.creds = credentials.NewTLS(config) }
}

// WithInsecure allows plaintext to a target that is not a loopback address or unix socket (plaintext is the
// default only for those).
func WithInsecure() Option { return func(c *dialConfig) { c.insecure = true } }

// WithServiceKey sends "authorization: Bearer <key>" on every call, for a server that authenticates its callers.
func WithServiceKey(key string) Option { return func(c *dialConfig) { c.serviceKey = key } }

// WithTimeout bounds each call whose context has no deadline; 0 leaves such calls unbounded.
func WithTimeout(d time.Duration) Option { return func(c *dialConfig) { c.timeout = d } }

// WithDialOptions passes further options to grpc.Dial (interceptors, keepalive, a custom dialer, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *dialConfig) { c.dialOptions = append(c.dialOptions, opts...) }
}

// Dial connects to an authsidecar at target ("127.0.0.1:50051", "unix:///run/authsidecar.sock",
// "auth.internal:50051"). Without WithTransportCredentials / WithTLSConfig the connection is plaintext, which
// Dial accepts only for loopback addresses and unix sockets unless WithInsecure is given. It does not wait for
// the connection: the first call does.
func Dial(target string, opts ...Option) (*Client, error) {
	config := dialConfig{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&config)
	}
	plaintext := config.creds == nil
	if plaintext && !config.insecure && !isLocal(target) {
		return nil, fmt.Errorf("authsidecar: %q is not a loopback address: use WithTransportCredentials, or WithInsecure for plaintext", target)
	}
	dialOptions := []grpc.DialOption{}
	if plaintext {
		dialOptions = append(dialOptions, grpc.WithInsecure())
	} else {
		dialOptions = append(dialOptions, grpc.WithTransportCredentials(config.creds))
	}
	if config.serviceKey != "" {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(bearer{config.serviceKey, !plaintext}))
	}
	conn, err := grpc.Dial(target, append(dialOptions, config.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	return NewClient(conn, config.timeout), nil
}

// NewClient wraps a connection made elsewhere; timeout bounds calls whose context has no deadline (0: none).
func NewClient(conn *grpc.ClientConn, timeout time.Duration) *Client {
	return &Client{
		conn:      conn,
		timeout:   timeout,
		Auth:      v1.NewAuthServiceClient(conn),
		Sessions:  v1.NewSessionServiceClient(conn),
		TwoFactor: v1.NewTwoFactorServiceClient(conn),
	}
}

// Conn is the underlying connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// isLocal reports whether target names a unix socket or a loopback host.
func isLocal(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if i := strings.Index(target, ":///"); i >= 0 { // dns:///host:port, passthrough:///host:port
		target = target[i+4:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

type bearer struct {
	key        string
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }

// RequestOption sets an optional request field; a method ignores the options its request does not have.
type RequestOption func(*requestOptions)

type requestOptions struct {
	client           v1.ClientContext
	rememberMe       *bool
	name, image      *string
	additionalFields map[string]interface{}
	issuer           string
	currentPassword  string
}

// WithClientIP is the end user's IP address (it keys the server's per-IP rate limits: pass it from a gateway).
func WithClientIP(ip string) RequestOption {
	return func(o *requestOptions) { o.client.IpAddress = ip }
}

// WithUserAgent is the end user's User-Agent, stored on the session.
func WithUserAgent(ua string) RequestOption {
	return func(o *requestOptions) { o.client.UserAgent = ua }
}

// RememberMe false gives a short session that is never refreshed (SignUp, SignIn; default true).
func RememberMe(remember bool) RequestOption {
	return func(o *requestOptions) { o.rememberMe = &remember }
}

// WithName sets the user's name (UpdateUser).
func WithName(name string) RequestOption { return func(o *requestOptions) { o.name = &name } }

// WithImage sets the user's image URL (SignUp, UpdateUser; "" clears it in UpdateUser).
func WithImage(image string) RequestOption { return func(o *requestOptions) { o.image = &image } }

// WithAdditionalFields sets values of the server's additional user fields (SignUp, UpdateUser; nil clears one).
// Values are JSON-like: string, bool, float64/int, nil, []interface{}, map[string]interface{}.
func WithAdditionalFields(fields map[string]interface{}) RequestOption {
	return func(o *requestOptions) { o.additionalFields = fields }
}

// WithIssuer is the TOTP issuer shown by authenticator apps (EnableTwoFactor).
func WithIssuer(issuer string) RequestOption { return func(o *requestOptions) { o.issuer = issuer } }

// WithCurrentPassword confirms an email change with the password instead of the current address (ChangeEmail).
func WithCurrentPassword(password string) RequestOption {
	return func(o *requestOptions) { o.currentPassword = password }
}

func collect(opts []RequestOption) (*requestOptions, *structpb.Struct, error) {
	o := &requestOptions{}
	for _, opt := range opts {
		opt(o)
	}
	if o.additionalFields == nil {
		return o, nil, nil
	}
	fields, err := structpb.NewStruct(o.additionalFields)
	if err != nil {
		return nil, nil, fmt.Errorf("authsidecar: additional fields: %w", err)
	}
	return o, fields, nil
}

func (o *requestOptions) clientContext() *v1.ClientContext {
	if o.client.IpAddress == "" && o.client.UserAgent == "" {
		return nil
	}
	return &v1.ClientContext{IpAddress: o.client.IpAddress, UserAgent: o.client.UserAgent}
}

// call runs one RPC with the default timeout and converts its error.
func call[Req, Reply any](c *Client, ctx context.Context, method func(context.Context, Req, ...grpc.CallOption) (Reply, error), request Req) (Reply, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	reply, err := method(ctx, request)
	return reply, wrap(err)
}

// SignUp creates a user, and a session unless the server's auto sign-in is off. Options: WithImage, RememberMe,
// WithAdditionalFields, WithClientIP, WithUserAgent.
func (c *Client) SignUp(ctx context.Context, email, password, name string, opts ...RequestOption) (*v1.SignUpResponse, error) {
	o, fields, err := collect(opts)
	if err != nil {
		return nil, err
	}
	request := &v1.SignUpRequest{Email: email, Password: password, Name: name, Client: o.clientContext(),
		RememberMe: o.rememberMe, AdditionalFields: fields}
	if o.image != nil {
		request.Image = *o.image
	}
	return call(c, ctx, c.Auth.SignUp, request)
}

// SignIn checks a password and returns user, session and token, or (two_factor plugin) reply.Challenge to
// complete with VerifyTotp / VerifyBackupCode. Options: RememberMe, WithClientIP, WithUserAgent.
func (c *Client) SignIn(ctx context.Context, email, password string, opts ...RequestOption) (*v1.SignInResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	request := &v1.SignInRequest{Email: email, Password: password, Client: o.clientContext(), RememberMe: o.rememberMe}
	return call(c, ctx, c.Auth.SignIn, request)
}

// SignOut ends a session.
func (c *Client) SignOut(ctx context.Context, token string) error {
	_, err := call(c, ctx, c.Auth.SignOut, &v1.SignOutRequest{Token: token})
	return err
}

// ValidateSession resolves a session token to its session and user (the hot path). Fails with
// ReasonInvalidToken or ReasonSessionExpired. In the Better Auth profile the token may also be the session
// cookie's signed value.
func (c *Client) ValidateSession(ctx context.Context, token string) (*v1.ValidateSessionResponse, error) {
	return call(c, ctx, c.Sessions.ValidateSession, &v1.ValidateSessionRequest{Token: token})
}

// ValidateCookie validates the session cookie found in a whole Cookie header (Better Auth profile).
func (c *Client) ValidateCookie(ctx context.Context, cookieHeader string) (*v1.ValidateSessionResponse, error) {
	return call(c, ctx, c.Sessions.ValidateSession, &v1.ValidateSessionRequest{Cookie: cookieHeader})
}

// ListSessions is the user's active sessions, newest first; CurrentSessionId names the token's own.
func (c *Client) ListSessions(ctx context.Context, token string) (*v1.ListSessionsResponse, error) {
	return call(c, ctx, c.Sessions.ListSessions, &v1.ListSessionsRequest{Token: token})
}

// RevokeSession revokes one of the user's sessions by id (ReasonSessionNotFound if it is not theirs).
func (c *Client) RevokeSession(ctx context.Context, token, sessionID string) error {
	_, err := call(c, ctx, c.Sessions.RevokeSession, &v1.RevokeSessionRequest{Token: token, SessionId: sessionID})
	return err
}

// RevokeOtherSessions revokes all of the user's sessions but the token's own; returns how many.
func (c *Client) RevokeOtherSessions(ctx context.Context, token string) (int, error) {
	reply, err := call(c, ctx, c.Sessions.RevokeOtherSessions, &v1.RevokeOtherSessionsRequest{Token: token})
	return int(reply.GetRevokedCount()), err
}

// RevokeSessions revokes all of the user's sessions; returns how many.
func (c *Client) RevokeSessions(ctx context.Context, token string) (int, error) {
	reply, err := call(c, ctx, c.Sessions.RevokeSessions, &v1.RevokeSessionsRequest{Token: token})
	return int(reply.GetRevokedCount()), err
}

// SendVerificationEmail queues a verification message (same answer whether or not the address exists).
func (c *Client) SendVerificationEmail(ctx context.Context, email string, opts ...RequestOption) error {
	o, _, err := collect(opts)
	if err != nil {
		return err
	}
	_, err = call(c, ctx, c.Auth.SendVerificationEmail, &v1.SendVerificationEmailRequest{Email: email, Client: o.clientContext()})
	return err
}

// VerifyEmail consumes a verification (or email change) token.
func (c *Client) VerifyEmail(ctx context.Context, token string, opts ...RequestOption) (*v1.VerifyEmailResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, c.Auth.VerifyEmail, &v1.VerifyEmailRequest{Token: token, Client: o.clientContext()})
}

// RequestPasswordReset queues a reset message (same answer whether or not the address exists).
func (c *Client) RequestPasswordReset(ctx context.Context, email string, opts ...RequestOption) error {
	o, _, err := collect(opts)
	if err != nil {
		return err
	}
	_, err = call(c, ctx, c.Auth.RequestPasswordReset, &v1.RequestPasswordResetRequest{Email: email, Client: o.clientContext()})
	return err
}

// ResetPassword sets a new password with a reset token.
func (c *Client) ResetPassword(ctx context.Context, token, newPassword string, opts ...RequestOption) error {
	o, _, err := collect(opts)
	if err != nil {
		return err
	}
	_, err = call(c, ctx, c.Auth.ResetPassword, &v1.ResetPasswordRequest{Token: token, NewPassword: newPassword, Client: o.clientContext()})
	return err
}

// ChangePassword changes the password (ReasonInvalidPassword for a wrong current one); with
// revokeOtherSessions the reply carries the replacement session and its token.
func (c *Client) ChangePassword(ctx context.Context, token, currentPassword, newPassword string, revokeOtherSessions bool, opts ...RequestOption) (*v1.ChangePasswordResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, c.Auth.ChangePassword, &v1.ChangePasswordRequest{Token: token, CurrentPassword: currentPassword,
		NewPassword: newPassword, RevokeOtherSessions: revokeOtherSessions, Client: o.clientContext()})
}

// ChangeEmail starts an email change (applied once the new address confirms). Options: WithCurrentPassword.
func (c *Client) ChangeEmail(ctx context.Context, token, newEmail string, opts ...RequestOption) error {
	o, _, err := collect(opts)
	if err != nil {
		return err
	}
	_, err = call(c, ctx, c.Auth.ChangeEmail, &v1.ChangeEmailRequest{Token: token, NewEmail: newEmail,
		CurrentPassword: o.currentPassword, Client: o.clientContext()})
	return err
}

// UpdateUser sets the fields given with WithName, WithImage and WithAdditionalFields; returns the user.
func (c *Client) UpdateUser(ctx context.Context, token string, opts ...RequestOption) (*v1.User, error) {
	o, fields, err := collect(opts)
	if err != nil {
		return nil, err
	}
	reply, err := call(c, ctx, c.Auth.UpdateUser, &v1.UpdateUserRequest{Token: token, Name: o.name, Image: o.image, AdditionalFields: fields})
	return reply.GetUser(), err
}

// DeleteUser deletes the account (with the password, or a fresh session and password "").
func (c *Client) DeleteUser(ctx context.Context, token, password string, opts ...RequestOption) error {
	o, _, err := collect(opts)
	if err != nil {
		return err
	}
	_, err = call(c, ctx, c.Auth.DeleteUser, &v1.DeleteUserRequest{Token: token, Password: password, Client: o.clientContext()})
	return err
}

// EnableTwoFactor starts enrolment (two_factor plugin): reply.TotpUri (show as a QR code) and reply.BackupCodes.
// Options: WithIssuer, WithClientIP.
func (c *Client) EnableTwoFactor(ctx context.Context, token, password string, opts ...RequestOption) (*v1.EnableTwoFactorResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, c.TwoFactor.EnableTwoFactor, &v1.EnableTwoFactorRequest{Token: token, Password: password,
		Issuer: o.issuer, Client: o.clientContext()})
}

// ConfirmTwoFactor finishes enrolment with a code from the authenticator app.
func (c *Client) ConfirmTwoFactor(ctx context.Context, token, code string) (*v1.User, error) {
	reply, err := call(c, ctx, c.TwoFactor.ConfirmTwoFactor, &v1.ConfirmTwoFactorRequest{Token: token, Code: code})
	return reply.GetUser(), err
}

// VerifyTotp completes a sign-in challenge with a TOTP code.
func (c *Client) VerifyTotp(ctx context.Context, challenge, code string, opts ...RequestOption) (*v1.VerifyTotpResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, c.TwoFactor.VerifyTotp, &v1.VerifyTotpRequest{Challenge: challenge, Code: code, Client: o.clientContext()})
}

// VerifyBackupCode completes a sign-in challenge with a backup code (each works once).
func (c *Client) VerifyBackupCode(ctx context.Context, challenge, code string, opts ...RequestOption) (*v1.VerifyBackupCodeResponse, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	return call(c, ctx, c.TwoFactor.VerifyBackupCode, &v1.VerifyBackupCodeRequest{Challenge: challenge, Code: code, Client: o.clientContext()})
}

// DisableTwoFactor turns two-factor authentication off.
func (c *Client) DisableTwoFactor(ctx context.Context, token, password string, opts ...RequestOption) (*v1.User, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	reply, err := call(c, ctx, c.TwoFactor.DisableTwoFactor, &v1.DisableTwoFactorRequest{Token: token, Password: password, Client: o.clientContext()})
	return reply.GetUser(), err
}

// GenerateBackupCodes replaces the backup codes and returns the new ones.
func (c *Client) GenerateBackupCodes(ctx context.Context, token, password string, opts ...RequestOption) ([]string, error) {
	o, _, err := collect(opts)
	if err != nil {
		return nil, err
	}
	reply, err := call(c, ctx, c.TwoFactor.GenerateBackupCodes, &v1.GenerateBackupCodesRequest{Token: token, Password: password, Client: o.clientContext()})
	return reply.GetBackupCodes(), err
}

// Fields is a user's or session's additional fields as plain Go values (JSON numbers are float64).
func Fields(record interface{ GetAdditionalFields() *structpb.Struct }) map[string]interface{} {
	return record.GetAdditionalFields().AsMap()
}

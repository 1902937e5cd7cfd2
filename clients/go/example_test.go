package authsidecar_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	authsidecar "github.com/authsidecar/authsidecar/clients/go"
)

// The README's "Use it from Go" example (compiled by go vet / go test; not run: it needs a server).
func Example() {
	ctx := context.Background()
	auth, err := authsidecar.Dial("127.0.0.1:50051") // plaintext: loopback and unix sockets only
	if err != nil {
		log.Fatal(err)
	}
	defer auth.Close()

	signedUp, err := auth.SignUp(ctx, "grace@example.com", "correct horse", "Grace")
	if err != nil {
		log.Fatal(err)
	}
	current, err := auth.ValidateSession(ctx, signedUp.Token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(current.User.Email, current.Session.ExpiresAt.AsTime())
	if _, err := auth.UpdateUser(ctx, signedUp.Token, authsidecar.WithName("Grace Hopper")); err != nil {
		log.Fatal(err)
	}
	if err := auth.SignOut(ctx, signedUp.Token); err != nil {
		log.Fatal(err)
	}

	_, err = auth.ValidateSession(ctx, signedUp.Token)
	var failure *authsidecar.Error
	if errors.As(err, &failure) {
		fmt.Println(failure.Code, failure.Reason) // Unauthenticated INVALID_TOKEN
	}
	if authsidecar.ReasonOf(err) == authsidecar.ReasonInvalidToken {
		fmt.Println("signed out")
	}
}

// natsjwt writes a decentralized-auth NATS setup for the TLS and credential
// tests: an operator, an account and a user (JWTs signed with fresh NKeys),
// the server configuration that trusts them, and the user's .creds file.
//
//	natsjwt DIR
//
// writes DIR/auth.conf (to include in nats-server's configuration),
// DIR/user.creds and DIR/other.creds (a user of an account the server
// does not know).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// must stops the program on an error.
func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsjwt:", err)
		os.Exit(1)
	}
}

// account makes an account signed by the operator, with JetStream enabled
// unless it is the system account.
func account(op nkeys.KeyPair, name string, jetstream bool) (nkeys.KeyPair, string) {
	kp, err := nkeys.CreateAccount()
	must(err)
	pub, err := kp.PublicKey()
	must(err)
	claims := jwt.NewAccountClaims(pub)
	claims.Name = name
	if jetstream {
		claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1,
			Streams: -1, Consumer: -1, MaxAckPending: -1, MemoryMaxStreamBytes: -1,
			DiskMaxStreamBytes: -1}
	}
	token, err := claims.Encode(op)
	must(err)
	return kp, token
}

// creds makes a user of the account and formats its .creds file.
func creds(acct nkeys.KeyPair, name string) []byte {
	kp, err := nkeys.CreateUser()
	must(err)
	pub, err := kp.PublicKey()
	must(err)
	claims := jwt.NewUserClaims(pub)
	claims.Name = name
	token, err := claims.Encode(acct)
	must(err)
	seed, err := kp.Seed()
	must(err)
	out, err := jwt.FormatUserConfig(token, seed)
	must(err)
	return out
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: natsjwt DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, err := op.PublicKey()
	must(err)
	// JetStream needs a system account
	sys, sysToken := account(op, "SYS", false)
	sysPub, err := sys.PublicKey()
	must(err)
	opClaims := jwt.NewOperatorClaims(opPub)
	opClaims.Name = "activity-core-test"
	opClaims.SystemAccount = sysPub
	opToken, err := opClaims.Encode(op)
	must(err)

	acct, acctToken := account(op, "APP", true)
	acctPub, err := acct.PublicKey()
	must(err)
	// an account signed by another operator: its users are refused
	stranger, err := nkeys.CreateOperator()
	must(err)
	other, _ := account(stranger, "OTHER", true)

	conf := fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\n"+
		"resolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opToken, sysPub, sysPub, sysToken, acctPub, acctToken)
	must(os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(conf), 0o644))
	must(os.WriteFile(filepath.Join(dir, "user.creds"), creds(acct, "router"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "other.creds"), creds(other, "stranger"), 0o600))
}

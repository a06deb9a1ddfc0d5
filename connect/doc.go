// Package connect turns the configuration's brokers, SASL and TLS settings
// into franz-go client options: the one place where kdedup's clients — the
// processor's transactional client, its restore and admin clients, and the
// command line's — learn how to reach the brokers.
//
// Secrets are read when Options is called (a password file at start-up) and
// live only inside the SASL mechanism franz-go holds; no error or log line
// of this package carries them.
package connect

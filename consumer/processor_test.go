package consumer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kdedup/kdedup/config"
)

func TestNewRejectsBadOptions(t *testing.T) {
	_, err := New(Options{
		Guarantee:           "twice",
		SessionTimeout:      10 * time.Second,
		TransactionTimeout:  20 * time.Second,
		RestoreStallTimeout: 15 * time.Second,
	})
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("error %v is not ErrOptions", err)
	}
	for _, want := range []string{"no brokers", "group and instance id", `guarantee "twice"`, "commit interval", "transaction timeout 20s must be below the session timeout 10s", "restore stall timeout 15s must be above the transaction timeout 20s", "store, streams, audit and changelog topics are required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := New(Options{Guarantee: config.AtLeastOnce}); err == nil {
		t.Fatal("empty options accepted")
	}
}

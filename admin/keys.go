package admin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kdedup/kdedup/consumer"
	"github.com/kdedup/kdedup/dedup"
)

// Keys is what the key admin API needs of the processor
// (consumer.Processor): look a key up, forget it. Both must be safe for
// concurrent use and return when ctx ends.
type Keys interface {
	LookupKey(ctx context.Context, q consumer.KeyQuery) (consumer.KeyState, error)
	ForgetKey(ctx context.Context, q consumer.KeyQuery, m consumer.Match) (consumer.KeyState, error)
}

// KeyTimeout bounds how long a key request waits for the processor
// (which answers between transactions, and restores a partition first if
// it must): past it the answer is 503, to be retried.
const KeyTimeout = 30 * time.Second

// KeyBody is the JSON body of a 200 answer of GET /v1/keys/{stream}: the
// key's live entry (the earliest first-seen, when several partitions hold
// the key).
type KeyBody struct {
	Stream string   `json:"stream"`
	Key    string   `json:"key"`
	Scope  []string `json:"scope"`
	// KeyEntryBody is the entry (its fields are the body's own in JSON).
	KeyEntryBody
	// ETag is the entry's entity tag, as in the ETag header.
	ETag string `json:"etag"`
	// Instance is the instance_id of the instance that answered.
	Instance string `json:"instance"`
	// Entries lists every live entry when more than one partition holds
	// the key (an input not partitioned by it); absent otherwise.
	Entries []KeyEntryBody `json:"entries,omitempty"`
}

// KeyEntryBody is one partition's entry of a key.
type KeyEntryBody struct {
	// Partition is the partition whose state holds the entry,
	// topic/partition.
	Partition string `json:"partition"`
	// First is the first-seen record, topic/partition/offset; FirstTS its
	// timestamp and ExpiresTS the end of the key's window (Unix ms):
	// records with the key and a timestamp below it are duplicates or
	// conflicts.
	First     string `json:"first"`
	FirstTS   int64  `json:"first_ts"`
	ExpiresTS int64  `json:"expires_ts"`
	// Fingerprint is the first-seen payload's fingerprint (hex), which a
	// later record's must equal for a duplicate rather than a conflict.
	Fingerprint string `json:"fingerprint"`
}

// HandleKeys adds the key admin API, answered by k:
//
//	GET    /v1/keys/{stream}?key=K&scope=V...   200 + ETag, or 404
//	DELETE /v1/keys/{stream}?key=K&scope=V...   If-Match required: 204, 404, 412, 428
//
// instance names this instance in the answers.
func (s *Server) HandleKeys(k Keys, instance string) {
	s.mux.HandleFunc("GET /v1/keys/{stream}", func(w http.ResponseWriter, r *http.Request) {
		q, ok := keyQuery(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), KeyTimeout)
		defer cancel()
		ks, err := k.LookupKey(ctx, q)
		if err != nil {
			s.keyError(w, q, ks, instance, err)
			return
		}
		w.Header().Set("ETag", ks.ETag)
		if inm := r.Header.Get("If-None-Match"); inm != "" {
			if m, err := parseIfMatch([]string{inm}); err == nil && (m.Any || containsWeak(m.ETags, ks.ETag)) {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		}
		writeJSON(w, http.StatusOK, keyBody(q, ks, instance))
	})
	s.mux.HandleFunc("DELETE /v1/keys/{stream}", func(w http.ResponseWriter, r *http.Request) {
		q, ok := keyQuery(w, r)
		if !ok {
			return
		}
		values := r.Header.Values("If-Match")
		if len(values) == 0 {
			writeError(w, http.StatusPreconditionRequired, "DELETE needs If-Match: the ETag a GET of the key answered, or * to forget whatever entry is live", nil)
			return
		}
		m, err := parseIfMatch(values)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), nil)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), KeyTimeout)
		defer cancel()
		ks, err := k.ForgetKey(ctx, q, m)
		if err != nil {
			s.keyError(w, q, ks, instance, err)
			return
		}
		s.log.Info().Str("stream", q.Stream).Str("key", q.Key).Strs("scope", q.Scope).Str("etag", ks.ETag).Str("remote", r.RemoteAddr).Msg("key forgotten")
		w.WriteHeader(http.StatusNoContent)
	})
}

// keyQuery reads the stream, key and scope of a request, answering 400
// if there is no key.
func keyQuery(w http.ResponseWriter, r *http.Request) (consumer.KeyQuery, bool) {
	vs := r.URL.Query()
	q := consumer.KeyQuery{Stream: r.PathValue("stream"), Key: vs.Get("key"), Scope: vs["scope"]}
	if !vs.Has("key") || q.Key == "" {
		writeError(w, http.StatusBadRequest, "the key query parameter is required: /v1/keys/"+q.Stream+"?key=K[&scope=V...]", nil)
		return q, false
	}
	if len(vs["key"]) > 1 {
		writeError(w, http.StatusBadRequest, "one key per request: the key query parameter is given more than once", nil)
		return q, false
	}
	return q, true
}

// keyError answers a failed key request.
func (s *Server) keyError(w http.ResponseWriter, q consumer.KeyQuery, ks consumer.KeyState, instance string, err error) {
	switch {
	case errors.Is(err, consumer.ErrUnknownStream):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown stream %q", q.Stream), nil)
	case errors.Is(err, dedup.ErrScope):
		writeError(w, http.StatusBadRequest, err.Error(), nil)
	case errors.Is(err, consumer.ErrNotLive):
		owned := ks.Owned
		if owned == nil {
			owned = []string{}
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("key %q of stream %s is not live in any partition this instance owns", q.Key, q.Stream),
			map[string]any{"partitions": owned, "instance": instance})
	case errors.Is(err, consumer.ErrPrecondition):
		w.Header().Set("ETag", ks.ETag)
		writeError(w, http.StatusPreconditionFailed, "If-Match does not name the key's current entry: it changed since it was read; GET it again", map[string]any{"etag": ks.ETag})
	case errors.Is(err, consumer.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error(), nil)
	default:
		s.log.Error().Err(err).Str("stream", q.Stream).Msg("key request")
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
	}
}

// keyBody is the 200 answer of ks.
func keyBody(q consumer.KeyQuery, ks consumer.KeyState, instance string) KeyBody {
	scope := q.Scope
	if scope == nil {
		scope = []string{}
	}
	b := KeyBody{Stream: q.Stream, Key: q.Key, Scope: scope, KeyEntryBody: entryBody(ks.Entries[0]), ETag: ks.ETag, Instance: instance}
	if len(ks.Entries) > 1 {
		for _, e := range ks.Entries {
			b.Entries = append(b.Entries, entryBody(e))
		}
	}
	return b
}

// entryBody describes one partition's entry of a key.
func entryBody(e consumer.KeyEntry) KeyEntryBody {
	return KeyEntryBody{
		Partition:   e.Topic + "/" + strconv.Itoa(int(e.Partition)),
		First:       e.Entry.Topic + "/" + strconv.Itoa(int(e.Entry.Partition)) + "/" + strconv.FormatInt(e.Offset, 10),
		FirstTS:     e.FirstSeen,
		ExpiresTS:   e.Expiry,
		Fingerprint: hex.EncodeToString(e.Fingerprint[:]),
	}
}

// ErrIfMatch is returned by parseIfMatch for a header that is neither "*"
// nor a list of entity tags.
var ErrIfMatch = errors.New("admin: malformed If-Match")

// parseIfMatch parses the If-Match header lines of a request (RFC 9110
// §13.1.1): "*", or a comma-separated list of entity tags ("opaque" or
// W/"opaque"). Weak tags are kept with their W/ and never match a strong
// comparison. An empty list, or anything else, is ErrIfMatch.
func parseIfMatch(values []string) (consumer.Match, error) {
	var m consumer.Match
	for _, v := range values {
		rest := strings.TrimSpace(v)
		if rest == "*" {
			m.Any = true
			continue
		}
		for rest != "" {
			if rest[0] == ',' || rest[0] == ' ' || rest[0] == '\t' {
				rest = rest[1:]
				continue
			}
			tag, after, ok := cutETag(rest)
			if !ok {
				return consumer.Match{}, fmt.Errorf("%w: %q: want * or entity tags such as \"abc123\"", ErrIfMatch, v)
			}
			m.ETags = append(m.ETags, tag)
			rest = strings.TrimLeft(after, " \t")
			if rest != "" && rest[0] != ',' {
				return consumer.Match{}, fmt.Errorf("%w: %q: entity tags are separated by commas", ErrIfMatch, v)
			}
		}
	}
	if !m.Any && len(m.ETags) == 0 {
		return consumer.Match{}, fmt.Errorf("%w: empty: want * or an entity tag", ErrIfMatch)
	}
	return m, nil
}

// cutETag cuts one entity tag off the front of s: W/"x" or "x", where x
// holds no '"', control character or space. It returns the tag as
// written.
func cutETag(s string) (tag, rest string, ok bool) {
	i := 0
	if strings.HasPrefix(s, "W/") {
		i = 2
	}
	if i >= len(s) || s[i] != '"' {
		return "", "", false
	}
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '"':
			return s[:j+1], s[j+1:], true
		case c < 0x21 || c == 0x7f:
			return "", "", false
		}
	}
	return "", "", false
}

// containsWeak reports whether tags holds etag under weak comparison
// (If-None-Match): W/ prefixes ignored.
func containsWeak(tags []string, etag string) bool {
	for _, t := range tags {
		if strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

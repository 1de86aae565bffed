package store

import "crypto/sha256"

// PayloadDigest identifies a payload: the first 16 bytes of its SHA-256.
type PayloadDigest [16]byte

// DigestOf returns the digest of payload.
func DigestOf(payload []byte) PayloadDigest {
	sum := sha256.Sum256(payload)
	return PayloadDigest(sum[:16])
}

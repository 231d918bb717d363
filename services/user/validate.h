/* validate.h — user-svc's input rules: email addresses, passwords, ids.
 * Pure functions, no state, thread-safe. */
#ifndef USER_VALIDATE_H
#define USER_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

/* 254: the longest address that fits SMTP's 256-octet path (RFC 5321 §4.5.3.1.3). */
#define EMAIL_MAX 254
/* 64: the longest local part (RFC 5321 §4.5.3.1.1). */
#define EMAIL_LOCAL_MAX 64
/* 12 characters: NIST SP 800-63B recommends ≥ 8; we ask a bit more. */
#define PASSWORD_MIN 12
/* 1024 characters: room for any passphrase; argon2 hashes it in constant
 * time anyway, the bound only keeps request bodies honest. */
#define PASSWORD_MAX 1024
#define USER_NAME_MIN 1
#define USER_NAME_MAX 100
/* 36: the canonical textual UUID 8-4-4-4-12. */
#define UUID_LEN 36

/* Trims ASCII whitespace, lower-cases, and checks the address: exactly one
 * '@', local part 1..64 printable ASCII without specials, domain of
 * dot-separated labels [a-z0-9-] (no leading/trailing '-', 1..63 each, at
 * least two labels), total ≤ 254. On success writes the normalised form
 * (NUL-terminated) into out (outsz ≥ EMAIL_MAX + 1) and returns 0; else
 * -EINVAL with a client-safe reason in *why. */
int email_normalize(const char *in, char *out, size_t outsz, const char **why);

/* The password policy: PASSWORD_MIN..PASSWORD_MAX code points (the caller
 * checks that with json_get_string) and not equal to the normalised email,
 * compared ASCII case-insensitively after trimming. 0 or -EINVAL with *why. */
int password_check(const char *password, const char *email_norm, const char **why);

/* Whether s is a canonical UUID (8-4-4-4-12 hex digits, either case). When
 * out is not NULL (UUID_LEN + 1 bytes) writes it lower-cased. */
bool uuid_parse(struct str s, char *out);

#endif

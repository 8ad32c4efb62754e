#!/usr/bin/env bash
# Mints an RS256 JWT for the demo's `jwt` route with the DEV-ONLY key in
# conf/demo-jwt-key.pem (its public half is conf/demo-jwks.json). Never use
# this key anywhere else.
#
#   scripts/demo-token.sh [SUBJECT] [SCOPES] [LIFETIME_SECONDS] [KID]
#   curl -H "Authorization: Bearer $(scripts/demo-token.sh alice 'orders:read')" http://127.0.0.1:8080/api/hello
set -euo pipefail
cd "$(dirname "$0")/.."
sub="${1:-alice}"
scope="${2:-orders:read}"
lifetime="${3:-3600}"
kid="${4:-demo-1}"
now=$(date +%s)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"%s"}' "$kid" | b64url)
payload=$(printf '{"iss":"https://demo.portcullis.local/","aud":"demo-api","sub":"%s","azp":"demo-cli","scope":"%s","realm_access":{"roles":["demo"]},"iat":%d,"exp":%d}' \
  "$sub" "$scope" "$now" "$((now + lifetime))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign conf/demo-jwt-key.pem -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"

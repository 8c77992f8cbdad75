#!/usr/bin/env bash
# laminad's TCP endpoint: TLS only, with client authentication. The test makes its own CA, a
# server certificate for 127.0.0.1, a client certificate and a bearer token; laminad asks for
# both. `lamina vm` and curl get in with both; a client without a certificate, with one from
# another CA, without the token or with a wrong one, or talking plain HTTP does not; a client
# that trusts another CA refuses laminad; laminad refuses a --listen without client
# authentication or with a missing key; the console's WebSocket works over TLS too.
#   laminad_tls_test.sh LAMINA LAMINAD
set -euo pipefail
lamina=$1 laminad=$2
work=$(mktemp -d)
daemon=0
cleanup() { [[ $daemon == 0 ]] || kill "$daemon" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; cat "$work/laminad.log" 2>/dev/null; exit 1; }
cd "$work"

# A CA, a server certificate naming 127.0.0.1, a client certificate; and a stranger's CA.
make_ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 2 \
    -subj "/CN=$1" 2>/dev/null
}
make_ca ca
make_ca stranger
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=laminad" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
  -days 2 -extfile server.ext 2>/dev/null
for who in client:ca outsider:stranger; do
  name=${who%%:*} signer=${who##*:}
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA "$signer.crt" -CAkey "$signer.key" -CAcreateserial \
    -out "$name.crt" -days 2 2>/dev/null
done
head -c 24 /dev/urandom | base64 | tr -d '/+=' >token
token=$(cat token)

# No client authentication: refused before it starts.
"$laminad" --state-dir state0 --socket s0.sock --listen 127.0.0.1:0 --tls-cert server.crt \
  --tls-key server.key 2>err && fail "started without client authentication"
grep -q "needs client authentication" err || fail "said: $(cat err)"
"$laminad" --state-dir state0 --socket s0.sock --listen 127.0.0.1:0 --tls-cert server.crt \
  --tls-key nonexistent.key --tls-ca ca.crt 2>err && fail "started with a missing key"
grep -q "tls-key" err || fail "missing key said: $(cat err)"

"$laminad" --state-dir state --socket l.sock --listen 127.0.0.1:0 --tls-cert server.crt \
  --tls-key server.key --tls-ca ca.crt --token-file token 2>laminad.log &
daemon=$!
for _ in $(seq 100); do grep -q "serving https" laminad.log 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*serving https on .* port \([0-9]*\)/\1/p' laminad.log)
[[ -n $port ]] || fail "no https port"
url=https://127.0.0.1:$port

# The CLI with a client certificate and the token (this laminad asks for both).
LAMINA_TLS_CA=ca.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=client.key LAMINA_TOKEN=$token \
  "$lamina" vm --connect "$url" create tls-vm --memory 64M >/dev/null || fail "create over TLS"
LAMINA_TLS_CA=ca.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=client.key \
  "$lamina" vm --connect "$url" list 2>err && fail "no token got in"
grep -q "a valid bearer token is needed" err || fail "no token said: $(cat err)"
# A client key that is not there: the error names the variable and the file.
LAMINA_TLS_CA=ca.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=missing.key LAMINA_TOKEN=$token \
  "$lamina" vm --connect "$url" list 2>err && fail "a missing client key was accepted"
grep -q "LAMINA_TLS_KEY missing.key" err || fail "a missing client key said: $(cat err)"
LAMINA_TLS_CA=ca.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=client.key LAMINA_TOKEN=$token \
  "$lamina" vm --connect "$url" list | grep -q "^tls-vm " || fail "list over TLS"
# Without a client certificate the handshake fails (the CA demands one).
LAMINA_TLS_CA=ca.crt LAMINA_TOKEN=$token "$lamina" vm --connect "$url" list 2>err &&
  fail "no client certificate got in"
grep -q "TLS with laminad\|laminad:" err || fail "said: $(cat err)"
# curl: a certificate from another CA, plain HTTP, and a good certificate without the token.
curl -sS --cacert ca.crt --cert outsider.crt --key outsider.key "$url/v1/vms" >/dev/null 2>&1 &&
  fail "a stranger's certificate got in"
curl -sS "http://127.0.0.1:$port/v1/vms" >/dev/null 2>&1 && fail "plain HTTP got in"
status=$(curl -sS -o body -w '%{http_code}' --cacert ca.crt --cert client.crt --key client.key "$url/v1/vms")
[[ $status == 401 ]] || fail "no token: $status"
status=$(curl -sS -o body -w '%{http_code}' --cacert ca.crt --cert client.crt --key client.key \
  -H "Authorization: Bearer wrong-$token" "$url/v1/vms")
[[ $status == 401 ]] || fail "wrong token: $status"
status=$(curl -sS -o body -w '%{http_code}' --cacert ca.crt --cert client.crt --key client.key \
  -H "Authorization: Bearer $token" "$url/v1/vms")
[[ $status == 200 ]] && grep -q tls-vm body || fail "good token: $status $(cat body)"
# The server certificate is checked too: a client trusting another CA refuses laminad.
LAMINA_TLS_CA=stranger.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=client.key LAMINA_TOKEN=$token \
  "$lamina" vm --connect "$url" list 2>err && fail "trusted a server from another CA"
grep -q "certificate verify failed" err || fail "bad server said: $(cat err)"
# The console's WebSocket goes over TLS as well (the VM is not running: laminad's 409 comes back).
LAMINA_TLS_CA=ca.crt LAMINA_TLS_CERT=client.crt LAMINA_TLS_KEY=client.key LAMINA_TOKEN=$token \
  "$lamina" vm --connect "$url" console tls-vm 2>err && fail "console of a stopped VM"
grep -q "tls-vm is not running" err || fail "console over TLS said: $(cat err)"
echo PASS

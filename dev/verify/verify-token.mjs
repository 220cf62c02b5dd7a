// Verifies an Entitle member token or license file with `jose` alone, as an
// app that checks entitlements offline would: the signature against the
// published keys (JWKS, by the token's `kid`), `alg` ES256 only, `exp`,
// `iss`, and the `tenant` the app serves.
//
// usage: node verify-token.mjs JWKS ISSUER TENANT TOKEN
//   JWKS: the JWK Set's URL (`.../.well-known/jwks.json`) or a file holding it.
// Prints the claims and exits 0 when the token is good; names why and exits 1
// when it is refused.
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from 'jose';

const [jwks, issuer, tenant, token] = process.argv.slice(2);
if (!token) {
  console.error('usage: node verify-token.mjs JWKS ISSUER TENANT TOKEN');
  process.exit(2);
}
const keys = /^https?:\/\//.test(jwks)
  ? createRemoteJWKSet(new URL(jwks))
  : createLocalJWKSet(JSON.parse(readFileSync(jwks, 'utf8')));
try {
  const { payload } = await jwtVerify(token, keys, {
    issuer,
    algorithms: ['ES256'],
    requiredClaims: ['exp', 'iat', 'sub'],
  });
  if (payload.tenant !== tenant) {
    throw new Error(`a token for tenant ${JSON.stringify(payload.tenant)}, not ${JSON.stringify(tenant)}`);
  }
  console.log(JSON.stringify(payload));
} catch (e) {
  console.error(`refused: ${e.code ?? e.name}: ${e.message}`);
  process.exit(1);
}

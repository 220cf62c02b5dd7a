"""Verifies an Entitle member token or license file with PyJWT alone, as an
app that checks entitlements offline would: the signature against the
published keys (JWKS, by the token's `kid`), `alg` ES256 only, `exp`, `iss`,
and the `tenant` the app serves.

usage: verify-token.py JWKS ISSUER TENANT TOKEN
  JWKS: the JWK Set's URL (`.../.well-known/jwks.json`) or a file holding it.
Prints the claims and exits 0 when the token is good; names why and exits 1
when it is refused.
"""
import json
import sys

import jwt  # PyJWT, with `cryptography` for ES256


def verify(jwks: str, issuer: str, tenant: str, token: str) -> dict:
    if jwks.startswith(("http://", "https://")):
        key = jwt.PyJWKClient(jwks, cache_keys=True).get_signing_key_from_jwt(token).key
    else:
        with open(jwks) as f:
            keys = jwt.PyJWKSet.from_json(f.read())
        key = keys[jwt.get_unverified_header(token)["kid"]].key
    claims = jwt.decode(token, key, algorithms=["ES256"], issuer=issuer,
                        options={"require": ["exp", "iat", "iss", "sub"]})
    if claims.get("tenant") != tenant:
        raise jwt.InvalidTokenError(f"a token for tenant {claims.get('tenant')!r}, not {tenant!r}")
    return claims


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        claims = verify(*sys.argv[1:])
    except (jwt.PyJWTError, KeyError) as e:
        print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())

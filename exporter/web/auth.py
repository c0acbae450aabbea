"""Who is calling /api/v1: the operator (EXPORTER_API_TOKEN, compared in constant time) or an app user
(a Supabase / PostgREST JWT, verified with PyJWT), and whether that caller may use the route asked for.

App JWTs: HS256 with EXPORTER_JWT_SECRET, or RS256 / ES256 with the key their `kid` names in
EXPORTER_JWT_JWKS_URL. The algorithm decides the key source, and each source admits only its own
algorithms, so `none` and an HS256 token "signed" with a public key never verify. `exp` is required;
`exp` and `nbf` get LEEWAY_S of clock skew; `aud` must be EXPORTER_JWT_AUDIENCE (`authenticated`),
`iss` EXPORTER_JWT_ISSUER when set. The `role` claim must be `authenticated`: an `anon` token is not a
signed-in user (401); a `service_role` token is refused (403), services use the operator token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt
from aiohttp import web

from exporter.core.claims import OPERATOR, Caller, app_user
from exporter.settings import Settings
from exporter.web.jwks import JwksCache

LEEWAY_S = 30
SECRET_ALGORITHMS = ("HS256",)  # verified with EXPORTER_JWT_SECRET only
KEY_SET_ALGORITHMS = ("RS256", "ES256")  # verified with a JWKS key only, of the same algorithm
WRONG_TOKEN = "missing or wrong bearer token"


class Refused(Exception):
    """A request the API turns away: 401 (who are you?) or 403 (not you), with a reason for the JSON body."""

    def __init__(self, status: int, reason: str, *, challenge: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.challenge = status, reason, challenge


def unauthorized(reason: str, *, token_given: bool = True) -> Refused:
    """401 with the RFC 6750 challenge; `invalid_token` when a token came and was not good."""
    challenge = 'Bearer realm="integration-health"' + (', error="invalid_token"' if token_given else "")
    return Refused(401, reason, challenge=challenge)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class Authenticator:
    """Turns an Authorization header into a Caller, or raises Refused."""

    api_token: bytes | None  # the operator's; None (or empty): no operator access
    jwt_secret: bytes | None = None
    jwks: JwksCache | None = None
    audience: str = "authenticated"
    issuer: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, jwks: JwksCache | None) -> Authenticator:
        token = settings.api_token.get_secret_value().encode() if settings.api_token else None
        secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None
        return cls(token or None, secret or None, jwks, settings.jwt_audience, settings.jwt_issuer)

    @property
    def accepts_jwts(self) -> bool:
        return self.jwt_secret is not None or self.jwks is not None

    @property
    def configured(self) -> bool:
        """Some caller can get in; without that the API is off rather than open."""
        return self.api_token is not None or self.accepts_jwts

    async def caller(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        if token is None:
            raise unauthorized(WRONG_TOKEN, token_given=False)
        given = token.encode(errors="surrogateescape")
        if self.api_token is not None and hmac.compare_digest(given, self.api_token):
            return OPERATOR
        if not self.accepts_jwts or token.count(".") != 2:  # not a JWT at all
            raise unauthorized(WRONG_TOKEN)
        return user_of(await self.claims(token))

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of a JWT whose signature, algorithm, expiry, audience and issuer all check out."""
        key, algorithm = await self._key_for(token)
        required = ["exp", "iss"] if self.issuer else ["exp"]
        try:
            return jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                              leeway=LEEWAY_S, options={"require": required, "enforce_minimum_key_length": True})
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the token's audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the token's issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise unauthorized("the token is not a valid JWT") from None

    async def _key_for(self, token: str) -> tuple[bytes | jwt.PyJWK, str]:
        """The key the token's algorithm calls for, from the one source that algorithm may use."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the token is not a valid JWT") from None
        algorithm = header.get("alg")
        if algorithm in SECRET_ALGORITHMS and self.jwt_secret is not None:
            return self.jwt_secret, algorithm
        if algorithm in KEY_SET_ALGORITHMS and self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise unauthorized("the token names no signing key (kid)")
            key = await self.jwks.key(kid)
            if key is None:
                raise unauthorized("the token's signing key (kid) is unknown")
            if key.algorithm_name != algorithm:
                raise unauthorized("the token's algorithm does not match its signing key")
            return key, algorithm
        raise unauthorized("the token's signing algorithm is not accepted")


def user_of(claims: dict[str, Any]) -> Caller:
    """The app user a verified token names; only the `authenticated` role is a signed-in user."""
    role = claims.get("role")
    if role == "authenticated":
        return app_user(claims)
    if role == "service_role":
        raise Refused(403, "a service_role token is not accepted here: services use the operator token "
                           "(EXPORTER_API_TOKEN)")
    raise unauthorized("the token is not a signed-in user's (its role is not 'authenticated')")


def access_refused(caller: Caller, request: web.Request) -> str | None:
    """Why `caller` may not use the route `request` matched, or None: routes under /api/v1/orgs/{org_id}
    admit the operator and that organisation's users; every other /api/v1 route the operator only."""
    if caller.is_operator or request.match_info.http_exception is not None:  # no such route: 404 for anyone
        return None
    org_text = request.match_info.get("org_id")
    if org_text is None:
        return "this route needs the operator token (EXPORTER_API_TOKEN); an app user's token cannot use it"
    try:
        org_id = UUID(org_text)
    except ValueError:
        return None  # the handler answers 400: org_id must be a UUID
    if caller.may_act_for(org_id):
        return None
    return f"this token does not grant access to organisation {org_id}"

"""Trusted OpenID Connect issuers: one `Issuer` per entry of the "Issuers" setting, and how the
claims of its tokens become a Principal."""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jwt import PyJWK, PyJWTError

from api.principal import Principal, Role

# Each accepted algorithm and the key type (and curve) that may verify it: a token's `alg` is
# only ever checked with a key of its own family, so a public key never becomes an HMAC secret.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"RS{bits}": ("RSA", None) for bits in (256, 384, 512)},
    **{f"PS{bits}": ("RSA", None) for bits in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    **{f"HS{bits}": ("oct", None) for bits in (256, 384, 512)},
}
SYMMETRIC = frozenset(alg for alg, (kty, _) in KEY_TYPES.items() if kty == "oct")
DEFAULT_ALGORITHMS = ("RS256", "ES256")
# The shortest HMAC secret we take: SHA-256's output, as RFC 7518 section 3.2 asks for HS256.
MIN_SECRET_BYTES = 32
KEYS = {
    "issuer",
    "audience",
    "jwksUrl",
    "publicKeys",
    "algorithms",
    "roleClaim",
    "dataSourcesClaim",
    "roleMap",
    "leewaySeconds",
}
ROLES = {"read": Role.READ, "write": Role.WRITE, "admin": Role.ADMIN}

# A claim's path in the token's payload: one literal name, or the keys of nested objects.
ClaimPath = tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Issuer:
    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str | None
    # JWK objects given in the configuration (the only place an `oct` key may come from).
    public_keys: tuple[Mapping[str, Any], ...]
    algorithms: frozenset[str]
    role_claim: ClaimPath
    data_sources_claim: ClaimPath
    # None: the claim values read, write and admin are our roles; else only these entries count.
    role_map: Mapping[str, Role] | None
    leeway_seconds: float

    @classmethod
    def parse(cls, entry: Any, path: str) -> "Issuer":
        """One entry of the "Issuers" setting; errors name the offending key."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: must be an object")
        if unknown := set(entry) - KEYS:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        issuer = entry.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise ValueError(f"{path}.issuer: required, the tokens' iss as a string")
        audiences = _audiences(entry.get("audience"), f"{path}.audience")
        if "jwksUrl" not in entry and "publicKeys" not in entry:
            raise ValueError(f"{path}: give jwksUrl or publicKeys")
        jwks_url = None
        if "jwksUrl" in entry:
            jwks_url = _jwks_url(entry["jwksUrl"], f"{path}.jwksUrl")
        algorithms = _algorithms(entry.get("algorithms", list(DEFAULT_ALGORITHMS)), path)
        public_keys = _public_keys(entry.get("publicKeys", []), algorithms, f"{path}.publicKeys")
        for symmetric in sorted(algorithms & SYMMETRIC):
            if not any(key["kty"] == "oct" for key in public_keys):
                raise ValueError(
                    f"{path}.algorithms: {symmetric} needs an oct key in publicKeys "
                    "(never one from a JWKS URL)"
                )
        leeway = entry.get("leewaySeconds", 30)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise ValueError(f"{path}.leewaySeconds: must be a number of seconds, 0 or more")
        return cls(
            issuer=issuer,
            audiences=audiences,
            jwks_url=jwks_url,
            public_keys=public_keys,
            algorithms=algorithms,
            role_claim=_claim_path(entry.get("roleClaim", "roles"), f"{path}.roleClaim"),
            data_sources_claim=_claim_path(
                entry.get("dataSourcesClaim", "data_sources"), f"{path}.dataSourcesClaim"
            ),
            role_map=_role_map(entry.get("roleMap"), f"{path}.roleMap"),
            leeway_seconds=float(leeway),
        )

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The caller a verified token's claims describe: the highest mapped role (or none),
        its data sources ("*" for all; none when the claim is missing), until it expires."""
        values = _claim(claims, self.role_claim)
        names = [values] if isinstance(values, str) else values if isinstance(values, list) else []
        known = self.role_map if self.role_map is not None else ROLES
        roles = [known[name] for name in names if isinstance(name, str) and name in known]
        sources = _claim(claims, self.data_sources_claim)
        if isinstance(sources, str):
            sources = sources.split()
        listed = [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []
        subject = claims.get("sub")
        return Principal(
            role=max(roles, default=Role.NONE),
            data_sources=None if "*" in listed else frozenset(listed),
            name=f"jwt:{subject if isinstance(subject, str) else '?'}@{self.issuer}",
            expires_at=float(claims["exp"]) + self.leeway_seconds,
        )


def _claim(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _audiences(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise ValueError(f"{path}: required, a string or a non-empty list of strings")


def _jwks_url(value: Any, path: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.hostname or parts.scheme not in ("https", "http"):
        raise ValueError(f"{path}: must be an https URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"{path}: must be https (plain http only on a loopback address)")
    return str(value)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _algorithms(value: Any, path: str) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{path}.algorithms: must be a non-empty list of algorithm names")
    for algorithm in value:
        if algorithm not in KEY_TYPES:
            raise ValueError(
                f"{path}.algorithms: {algorithm!r} is not one of {', '.join(KEY_TYPES)}"
                + (" (unsigned tokens are never accepted)" if algorithm.lower() == "none" else "")
            )
    return frozenset(value)


def _public_keys(
    value: Any, algorithms: frozenset[str], path: str
) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        raise ValueError(f"{path}: must be a list of JWK objects")
    keys: list[Mapping[str, Any]] = []
    for index, key in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise ValueError(f"{where}: must be a JWK object with a kty")
        fitting = [alg for alg in sorted(algorithms) if fits(key, alg)]
        if not fitting:
            raise ValueError(f"{where}: a {key['kty']} key fits none of the algorithms listed")
        try:
            built = PyJWK(key, algorithm=fitting[0])
        except PyJWTError as error:
            raise ValueError(f"{where}: not a usable key ({error.__class__.__name__})") from None
        if key["kty"] == "oct" and len(built.key) < MIN_SECRET_BYTES:
            raise ValueError(f"{where}: an oct key needs at least {MIN_SECRET_BYTES} bytes")
        keys.append(dict(key))
    return tuple(keys)


def fits(key: Mapping[str, Any], algorithm: str) -> bool:
    """Whether a JWK may verify tokens signed with `algorithm`: its family, curve, `alg` and
    `use` all allow it."""
    kty, curve = KEY_TYPES[algorithm]
    return (
        key.get("kty") == kty
        and (curve is None or key.get("crv") == curve)
        and key.get("alg", algorithm) == algorithm
        and key.get("use", "sig") == "sig"
    )


def _claim_path(value: Any, path: str) -> ClaimPath:
    if isinstance(value, str) and value:
        return (value,)  # taken literally: dots and slashes are part of the name
    if isinstance(value, list) and value and all(isinstance(key, str) and key for key in value):
        return tuple(value)
    raise ValueError(
        f'{path}: a claim name, or a list of keys as its path ["realm_access", "roles"]'
    )


def _role_map(value: Any, path: str) -> Mapping[str, Role] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f'{path}: must be an object such as {{"provider-role": "read"}}')
    mapped: dict[str, Role] = {}
    for name, role in value.items():
        if role not in ROLES:
            raise ValueError(f"{path}.{name}: must be read, write or admin")
        mapped[name] = ROLES[role]
    return mapped

//! Tenants and bearer tokens: the commands that create tenants, issue and
//! revoke tokens, and resolve a presented secret to its token.
//!
//! Decisions are plain functions over what the projections say; the events
//! they produce go through [`crate::store::record`]. A secret exists only in
//! the return value of [`issue_token`]: the log and the projections hold its
//! SHA-256, and [`Secret`]'s `Debug` never prints it.

use events::db::Db;
use events::event::{
    ClientRegistered, ClientRevoked, TenantCreated, TokenIssued, TokenRevoked, TokenScope,
};
use events::{CommandContext, Event, ExpectedVersion, LogTransaction, Pending, SYSTEM_TENANT};
use jiff::{SignedDuration, Timestamp};
use projections::tenancy::{self, ClientRecord, Tenant, TokenRecord};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::{Store, record};

/// Tenant names: what the CLI and URLs use, so kept to a safe alphabet.
pub const TENANT_NAME_LENGTH_MAX: usize = 63;
/// Token labels are for humans; a bound keeps them that way.
pub const TOKEN_LABEL_LENGTH_MAX: usize = 200;
/// The longest lifetime a token may be issued with (ten years).
pub const TOKEN_LIFETIME_DAYS_MAX: i64 = 3650;
/// What every OAuth client id starts with (a ULID follows).
pub const CLIENT_ID_PREFIX: &str = "rcc_";
/// Every secret starts with this, so secret scanners can recognise it.
pub const SECRET_PREFIX: &str = "rc_";

/// A token secret, shown once. `Debug` is redacted so it cannot reach a log
/// by accident.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

/// The SHA-256 of a presented secret: the key of the token lookup.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> Result<Secret, Error> {
    Ok(Secret(format!("{SECRET_PREFIX}{}", random_hex()?)))
}

/// 256 random bits as hex: the body of every secret rollcall makes.
pub fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Internal(format!("no randomness for a secret: {error}")))?;
    Ok(events::hash::to_hex(&bytes))
}

/// Checks a tenant name: 1 to 63 of `a-z 0-9 -`, starting with a letter or
/// digit.
pub fn validate_tenant_name(name: &str) -> Result<(), Error> {
    let valid_characters =
        name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    let valid_start = name.bytes().next().is_some_and(|byte| byte != b'-');
    if name.is_empty() || name.len() > TENANT_NAME_LENGTH_MAX || !valid_characters || !valid_start {
        return Err(Error::invalid(format!(
            "tenant name {name:?} must be 1 to {TENANT_NAME_LENGTH_MAX} characters of a-z, 0-9 and '-', not starting with '-'"
        )));
    }
    Ok(())
}

/// Parses a token lifetime such as `90d`, `12h`, `2w` or `30m`.
pub fn parse_lifetime(text: &str) -> Result<SignedDuration, Error> {
    let invalid = || {
        Error::invalid(format!(
            "lifetime {text:?} must be a whole number followed by m, h, d or w (e.g. 90d)"
        ))
    };
    let text_trimmed = text.trim();
    let unit_at =
        text_trimmed.find(|character: char| !character.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = text_trimmed.split_at(unit_at);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let minutes_per_unit = match unit {
        "m" => 1,
        "h" => 60,
        "d" => 24 * 60,
        "w" => 7 * 24 * 60,
        _ => return Err(invalid()),
    };
    let minutes = number.checked_mul(minutes_per_unit).ok_or_else(invalid)?;
    if minutes <= 0 || minutes > TOKEN_LIFETIME_DAYS_MAX * 24 * 60 {
        return Err(Error::invalid(format!(
            "lifetime {text:?} must be more than zero and at most {TOKEN_LIFETIME_DAYS_MAX} days"
        )));
    }
    Ok(SignedDuration::from_mins(minutes))
}

/// Creates a tenant. Names are unique, case-insensitively.
pub fn create_tenant(store: &Store, name: &str, context: CommandContext) -> Pending<Tenant, Error> {
    if let Err(error) = validate_tenant_name(name) {
        return Pending::ready(Err(events::ExecuteError::Command(error)));
    }
    let name = name.to_owned();
    store.command(Some(SYSTEM_TENANT), move |tx| {
        if tenancy::tenant_by_name(tx.db(), &name)?.is_some() {
            return Err(Error::conflict(format!("a tenant named {name:?} already exists")));
        }
        let tenant_id = ulid::Ulid::generate().to_string();
        let event = Event::TenantCreated(TenantCreated { tenant_id: tenant_id.clone(), name });
        record(
            tx,
            SYSTEM_TENANT,
            &format!("tenant:{tenant_id}"),
            ExpectedVersion::NoStream,
            &[event],
            &context,
        )?;
        tenancy::tenant_by_id(tx.db(), &tenant_id)?
            .ok_or_else(|| Error::Internal("tenant vanished".to_owned()))
    })
}

/// What [`issue_token`] needs.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scope: TokenScope,
    pub lifetime: Option<SignedDuration>,
    pub label: Option<String>,
    /// The OAuth client the token is issued to (client-credentials grant).
    pub client_id: Option<String>,
}

impl TokenRequest {
    /// A request as the admin API, the console and the CLI take one: a scope
    /// by name, a lifetime such as `90d` (absent or empty: the token does not
    /// expire), and a label.
    pub fn parse(
        scope: &str,
        expires: Option<&str>,
        label: Option<String>,
    ) -> Result<TokenRequest, Error> {
        let scope = TokenScope::parse(scope).ok_or_else(|| {
            Error::invalid(format!("scope {scope:?} must be one of scim, admin, audit"))
        })?;
        let lifetime =
            expires.filter(|text| !text.trim().is_empty()).map(parse_lifetime).transpose()?;
        Ok(TokenRequest { scope, lifetime, label, client_id: None })
    }
}

/// Issues a token for a tenant (by name or id). The secret is returned once
/// and never stored.
pub fn issue_token(
    store: &Store,
    tenant: TenantRef,
    request: TokenRequest,
    context: CommandContext,
) -> Pending<(TokenRecord, Secret), Error> {
    let prepared =
        (|| {
            if let Some(label) = &request.label
                && (label.chars().count() > TOKEN_LABEL_LENGTH_MAX
                    || label.chars().any(char::is_control))
            {
                return Err(Error::invalid(format!(
                    "a token label is at most {TOKEN_LABEL_LENGTH_MAX} printable characters"
                )));
            }
            let expires_at =
                match request.lifetime {
                    None => None,
                    Some(lifetime) => Some(store.now().checked_add(lifetime).map_err(|error| {
                        Error::invalid(format!("lifetime out of range: {error}"))
                    })?),
                };
            Ok((new_secret()?, expires_at.map(events::time::format_millis)))
        })();
    let (secret, expires_at) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return Pending::ready(Err(events::ExecuteError::Command(error))),
    };
    let secret_sha256 = events::hash::to_hex(&secret_hash(secret.expose()));
    store.command(None, move |tx| {
        let tenant = tenant.resolve(tx.db())?;
        let token_id = ulid::Ulid::generate().to_string();
        let event = Event::TokenIssued(TokenIssued {
            token_id: token_id.clone(),
            scope: request.scope,
            secret_sha256,
            expires_at,
            label: request.label,
            client_id: request.client_id,
        });
        record(
            tx,
            &tenant.tenant_id,
            &format!("token:{token_id}"),
            ExpectedVersion::NoStream,
            &[event],
            &context,
        )?;
        let record = tenancy::token_by_id(tx.db(), &token_id)?
            .ok_or_else(|| Error::Internal("token vanished".to_owned()))?;
        Ok((record, secret))
    })
}

/// Every OAuth client secret starts with this, like token secrets.
pub const CLIENT_SECRET_PREFIX: &str = "rcs_";

/// Registers an OAuth 2.0 client (client-credentials grant) for a tenant.
/// Returns its record and its secret, shown once.
pub fn register_client(
    store: &Store,
    tenant: TenantRef,
    label: Option<String>,
    context: CommandContext,
) -> Pending<(ClientRecord, Secret), Error> {
    if let Some(label) = &label
        && (label.chars().count() > TOKEN_LABEL_LENGTH_MAX || label.chars().any(char::is_control))
    {
        let error = Error::invalid(format!(
            "a client label is at most {TOKEN_LABEL_LENGTH_MAX} printable characters"
        ));
        return Pending::ready(Err(events::ExecuteError::Command(error)));
    }
    let secret = match new_secret() {
        Ok(secret) => {
            Secret(format!("{CLIENT_SECRET_PREFIX}{}", secret.0.trim_start_matches(SECRET_PREFIX)))
        }
        Err(error) => return Pending::ready(Err(events::ExecuteError::Command(error))),
    };
    let secret_sha256 = events::hash::to_hex(&secret_hash(secret.expose()));
    store.command(None, move |tx| {
        let tenant = tenant.resolve(tx.db())?;
        let client_id = format!(
            "{CLIENT_ID_PREFIX}{}",
            ulid::Ulid::generate().to_string().to_ascii_lowercase()
        );
        let event = Event::ClientRegistered(ClientRegistered {
            client_id: client_id.clone(),
            secret_sha256,
            label,
        });
        record(
            tx,
            &tenant.tenant_id,
            &format!("client:{client_id}"),
            ExpectedVersion::NoStream,
            &[event],
            &context,
        )?;
        let client = tenancy::client_by_id(tx.db(), &client_id)?
            .ok_or_else(|| Error::Internal("client vanished".to_owned()))?;
        Ok((client, secret))
    })
}

/// Revokes an OAuth client and every token it still holds.
pub fn revoke_client(
    store: &Store,
    client_id: &str,
    context: CommandContext,
) -> Pending<Revoked, Error> {
    let client_id = client_id.to_owned();
    let clock = store.log().clock();
    store.command(None, move |tx| {
        let client = tenancy::client_by_id(tx.db(), &client_id)?
            .ok_or_else(|| Error::not_found(format!("client {client_id}")))?;
        if client.revoked_at.is_some() {
            return Ok(Revoked::Already);
        }
        let now = events::time::format_millis(clock());
        for token in tenancy::live_tokens_of_client(tx.db(), &client_id, &now)? {
            record_revocation(tx, &token, &context)?;
        }
        let stream = format!("client:{client_id}");
        let expected = tx
            .stream_version(&client.tenant_id, &stream)?
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let event = Event::ClientRevoked(ClientRevoked { client_id });
        record(tx, &client.tenant_id, &stream, expected, &[event], &context)?;
        Ok(Revoked::Now)
    })
}

/// Appends a token's TokenRevoked at its stream's current version.
fn record_revocation(
    tx: &mut dyn LogTransaction,
    token: &TokenRecord,
    context: &CommandContext,
) -> Result<(), Error> {
    let stream = format!("token:{}", token.token_id);
    let version = tx.stream_version(&token.tenant_id, &stream)?;
    let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    let event = Event::TokenRevoked(TokenRevoked { token_id: token.token_id.clone() });
    record(tx, &token.tenant_id, &stream, expected, &[event], context)?;
    Ok(())
}

/// Why the token endpoint refuses a client (RFC 6749 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRefusal {
    /// Unknown client, wrong secret, or revoked: one answer for all, so
    /// the endpoint tells an attacker nothing.
    InvalidClient,
    /// The client already holds [`CLIENT_LIVE_TOKENS_MAX`] live access
    /// tokens; the earliest expires in `retry_after` seconds.
    TooManyTokens { retry_after: u64 },
}

/// Live access tokens one OAuth client may hold. Each grant is a
/// `TokenIssued` in the log for good, so a client that asks for a token per
/// request (or a leaked secret) must not grow the log without bound: at
/// most this many grants per token lifetime. An identity provider that
/// renews at half-life holds two; the rest is room for several of its
/// nodes asking at once.
pub const CLIENT_LIVE_TOKENS_MAX: usize = 5;

/// The refusal of a client holding `live` tokens at `now`, if it is at its
/// cap: retry once the earliest of them has expired.
fn too_many(live: &[TokenRecord], now: Timestamp) -> Option<ClientRefusal> {
    if live.len() < CLIENT_LIVE_TOKENS_MAX {
        return None;
    }
    let earliest = live
        .iter()
        .filter_map(|token| token.expires_at.as_deref()?.parse::<Timestamp>().ok())
        .min();
    let retry_after =
        earliest.map_or(1, |at| u64::try_from(at.duration_since(now).as_secs()).unwrap_or(0) + 1);
    Some(ClientRefusal::TooManyTokens { retry_after })
}

/// The client-credentials grant: checks the client's secret and issues a
/// short-lived `scim` token to it, recorded like any other token.
pub fn grant_client_credentials(
    store: &Store,
    client_id: &str,
    client_secret: &str,
    lifetime: SignedDuration,
    context: CommandContext,
) -> Pending<Result<(TokenRecord, Secret), ClientRefusal>, Error> {
    let client_id = client_id.to_owned();
    let presented = secret_hash(client_secret);
    // Refused on a read connection first: a flood of wrong credentials must
    // never queue for the single writer that the identity providers' writes
    // need. The writer checks again (a revocation may land in between).
    // The same goes for a client at its cap of live tokens.
    let now = store.now();
    let admitted = store.read(|connection| {
        let known = tenancy::client_by_id(connection, &client_id)?
            .is_some_and(|client| client.revoked_at.is_none() && client.secret_sha256 == presented);
        if !known {
            return Ok(Some(ClientRefusal::InvalidClient));
        }
        let live = tenancy::live_tokens_of_client(
            connection,
            &client_id,
            &events::time::format_millis(now),
        )?;
        Ok(too_many(&live, now))
    });
    match admitted {
        Ok(None) => {}
        Ok(Some(refusal)) => return Pending::ready(Ok(Err(refusal))),
        Err(error) => return Pending::ready(Err(events::ExecuteError::Command(error))),
    }
    let secret = match new_secret() {
        Ok(secret) => secret,
        Err(error) => return Pending::ready(Err(events::ExecuteError::Command(error))),
    };
    let expires_at = match store.now().checked_add(lifetime) {
        Ok(instant) => events::time::format_millis(instant),
        Err(error) => {
            return Pending::ready(Err(events::ExecuteError::Command(Error::Internal(
                error.to_string(),
            ))));
        }
    };
    let secret_sha256 = events::hash::to_hex(&secret_hash(secret.expose()));
    let clock = store.log().clock();
    store.command(None, move |tx| {
        let client = tenancy::client_by_id(tx.db(), &client_id)?;
        let Some(client) = client
            .filter(|client| client.revoked_at.is_none() && client.secret_sha256 == presented)
        else {
            return Ok(Err(ClientRefusal::InvalidClient));
        };
        let now = clock();
        let live = tenancy::live_tokens_of_client(
            tx.db(),
            &client.client_id,
            &events::time::format_millis(now),
        )?;
        if let Some(refusal) = too_many(&live, now) {
            return Ok(Err(refusal));
        }
        let token_id = ulid::Ulid::generate().to_string();
        let event = Event::TokenIssued(TokenIssued {
            token_id: token_id.clone(),
            scope: TokenScope::Scim,
            secret_sha256,
            expires_at: Some(expires_at),
            label: Some(format!("OAuth client {}", client.client_id)),
            client_id: Some(client.client_id.clone()),
        });
        record(
            tx,
            &client.tenant_id,
            &format!("token:{token_id}"),
            ExpectedVersion::NoStream,
            &[event],
            &context,
        )?;
        let record = tenancy::token_by_id(tx.db(), &token_id)?
            .ok_or_else(|| Error::Internal("token vanished".to_owned()))?;
        Ok(Ok((record, secret)))
    })
}

/// Whether [`revoke_token`] changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
}

/// Revokes a token. With `within_tenant`, a token of another tenant is
/// "not found", exactly like a token that does not exist.
pub fn revoke_token(
    store: &Store,
    token_id: &str,
    within_tenant: Option<String>,
    context: CommandContext,
) -> Pending<Revoked, Error> {
    let token_id = token_id.to_owned();
    store.command(None, move |tx| {
        let token = tenancy::token_by_id(tx.db(), &token_id)?
            .filter(|token| within_tenant.as_ref().is_none_or(|tenant| *tenant == token.tenant_id))
            .ok_or_else(|| Error::not_found(format!("token {token_id}")))?;
        if token.revoked_at.is_some() {
            return Ok(Revoked::Already);
        }
        record_revocation(tx, &token, &context)?;
        Ok(Revoked::Now)
    })
}

/// A tenant named by the CLI (by name) or by a token (by id).
#[derive(Debug, Clone)]
pub enum TenantRef {
    Name(String),
    Id(String),
}

impl TenantRef {
    pub fn resolve(&self, connection: &dyn Db) -> Result<Tenant, Error> {
        let found = match self {
            TenantRef::Name(name) => tenancy::tenant_by_name(connection, name)?,
            TenantRef::Id(id) => tenancy::tenant_by_id(connection, id)?,
        };
        found.ok_or_else(|| match self {
            TenantRef::Name(name) => Error::not_found(format!("tenant {name:?}")),
            TenantRef::Id(id) => Error::not_found(format!("tenant {id}")),
        })
    }
}

/// A token's state at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Revoked,
    Expired,
}

impl TokenStatus {
    /// The word the API, the CLI and the console show.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Expired => "expired",
        }
    }
}

/// A token's state at `now`. An expiry that does not parse counts as past:
/// a token whose lifetime cannot be read is not admitted.
pub fn token_status(token: &TokenRecord, now: Timestamp) -> TokenStatus {
    if token.revoked_at.is_some() {
        return TokenStatus::Revoked;
    }
    let expired = token.expires_at.as_deref().is_some_and(|expires_at| {
        expires_at.parse::<Timestamp>().map_or(true, |expires_at| expires_at <= now)
    });
    if expired { TokenStatus::Expired } else { TokenStatus::Active }
}

/// Why a presented token does not open a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
    WrongScope,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unknown => "the bearer token is not valid",
            Refusal::Revoked => "the bearer token has been revoked",
            Refusal::Expired => "the bearer token has expired",
            Refusal::WrongScope => "the bearer token's scope does not allow this route",
        }
    }
}

/// Decides whether `token` (found by its hash, or not) may use a route
/// open to `allowed` scopes at instant `now`.
pub fn admit(
    token: Option<TokenRecord>,
    allowed: &[TokenScope],
    now: Timestamp,
) -> Result<TokenRecord, Refusal> {
    let token = token.ok_or(Refusal::Unknown)?;
    if token.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    if token_status(&token, now) == TokenStatus::Expired {
        return Err(Refusal::Expired);
    }
    if !allowed.contains(&token.scope) {
        return Err(Refusal::WrongScope);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scope: TokenScope) -> TokenRecord {
        TokenRecord {
            token_id: "T".to_owned(),
            tenant_id: "N".to_owned(),
            tenant_name: "acme".to_owned(),
            scope,
            label: None,
            created_at: "2026-01-01T00:00:00.000Z".to_owned(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn admission_checks_existence_revocation_expiry_and_scope() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        assert_eq!(admit(None, &[TokenScope::Scim], now), Err(Refusal::Unknown));
        assert!(admit(Some(token(TokenScope::Scim)), &[TokenScope::Scim], now).is_ok());
        assert_eq!(
            admit(Some(token(TokenScope::Scim)), &[TokenScope::Admin], now),
            Err(Refusal::WrongScope)
        );
        let revoked = TokenRecord {
            revoked_at: Some("2026-02-01T00:00:00.000Z".to_owned()),
            ..token(TokenScope::Scim)
        };
        assert_eq!(admit(Some(revoked), &[TokenScope::Scim], now), Err(Refusal::Revoked));
        let expired = TokenRecord {
            expires_at: Some("2026-06-01T00:00:00.000Z".to_owned()),
            ..token(TokenScope::Audit)
        };
        assert_eq!(admit(Some(expired), &[TokenScope::Audit], now), Err(Refusal::Expired));
        let alive = TokenRecord {
            expires_at: Some("2026-06-01T00:00:00.001Z".to_owned()),
            ..token(TokenScope::Audit)
        };
        assert!(admit(Some(alive), &[TokenScope::Audit, TokenScope::Admin], now).is_ok());
    }

    #[test]
    fn lifetimes_parse_with_units_and_bounds() {
        assert_eq!(parse_lifetime("90d").unwrap(), SignedDuration::from_hours(90 * 24));
        assert_eq!(parse_lifetime("2w").unwrap(), SignedDuration::from_hours(14 * 24));
        assert_eq!(parse_lifetime("30m").unwrap(), SignedDuration::from_mins(30));
        for bad in ["", "d", "90", "0d", "-1d", "90y", "9999999999999999999d", "3651d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tenant_names_are_checked() {
        for good in ["acme", "a", "acme-eu-2"] {
            assert!(validate_tenant_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-acme", "Acme", "ac me", "acme/x", &"a".repeat(64)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_prefixed_random_and_redacted_in_debug() {
        let first = new_secret().unwrap();
        let second = new_secret().unwrap();
        assert!(first.expose().starts_with(SECRET_PREFIX));
        assert_eq!(first.expose().len(), SECRET_PREFIX.len() + 64);
        assert_ne!(first.expose(), second.expose());
        assert!(!format!("{first:?}").contains(&first.expose()[3..]));
    }
}

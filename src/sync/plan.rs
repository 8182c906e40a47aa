//! What Synchronize would do to one user's member: the decision, made from
//! the SCIM directory as it stands, the member as it stands, and the
//! tenant's mapping and role bindings. Pure reads; nothing here writes.
//!
//! The preview and the run share these functions, so what the preview
//! shows is what the run applies (the run decides again inside the writer,
//! on the directory as it is at that moment).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use events::db::Db;
use events::event::PropertyChange;
use jiff::Timestamp;
use projections::directory::schema::ResourceKind;
use projections::directory::store::{self as directory, ResourceRow};
use projections::members::{self, MemberRow, MemberStatus};
use serde::Serialize;
use serde_json::{Map, Value};

use super::config::{
    CompiledRule, GroupMatch, Mapping, PropertyRule, RoleBindings, SyncSettings, convert,
    is_allowed, stored_or_default,
};
use crate::error::Error;
use crate::model::eval;

/// A tenant's rules, loaded once per preview or run.
pub struct Rules {
    pub mapping: Mapping,
    compiled: Vec<CompiledRule>,
    pub bindings: RoleBindings,
    pub settings: SyncSettings,
    /// The roles each user's bound groups grant (users in no bound group
    /// are absent).
    roles_by_user: HashMap<String, BTreeSet<String>>,
    /// Positions of the events that last set the mapping and the bindings.
    pub mapping_position: u64,
    pub bindings_position: u64,
    /// Who holds each value of a `unique` property: loaded with the roles
    /// (the tenant's active and disabled members), then kept up to date by
    /// each decision of the run or preview, in order, so two new users
    /// with one email are told apart in the same run.
    claims: Mutex<Claims>,
}

/// Per unique property, each value's key ([`unique_key`]) and the SCIM
/// user whose member holds it.
type Claims = HashMap<String, HashMap<String, String>>;

/// How a unique value is compared: a string by userName's case folding,
/// anything else by its JSON text.
fn unique_key(value: &Value) -> String {
    match value {
        Value::String(text) => projections::functions::fold(text),
        other => other.to_string(),
    }
}

impl Rules {
    /// The tenant's mapping, bindings and settings; the users each binding
    /// reaches are read by [`Rules::load_roles`].
    pub fn load(connection: &dyn Db, tenant: &str) -> Result<Rules, Error> {
        let (mapping, mapping_position) = stored(connection, tenant, "mapping")?;
        let (bindings, bindings_position) = stored(connection, tenant, "roles")?;
        let (settings, _) = stored::<SyncSettings>(connection, tenant, "sync")?;
        let mut rules = Rules::new(mapping, bindings, settings)?;
        rules.mapping_position = mapping_position;
        rules.bindings_position = bindings_position;
        Ok(rules)
    }

    /// Rules from their parts, with no user in any bound group yet (see
    /// [`Rules::load_roles`]).
    pub fn new(
        mapping: Mapping,
        bindings: RoleBindings,
        settings: SyncSettings,
    ) -> Result<Rules, Error> {
        // Stored mappings were validated before they were recorded.
        let compiled = mapping.validate()?;
        Ok(Rules {
            mapping,
            compiled,
            bindings,
            settings,
            roles_by_user: HashMap::new(),
            mapping_position: 0,
            bindings_position: 0,
            claims: Mutex::new(HashMap::new()),
        })
    }

    /// These rules with `mapping` in place of the recorded one, as if it
    /// were recorded after every checkpoint (so everyone is pending).
    pub fn with_mapping(mut self, mapping: Mapping) -> Result<Rules, Error> {
        self.compiled = mapping.validate()?;
        self.mapping = mapping;
        self.mapping_position = u64::MAX;
        Ok(self)
    }

    /// Reads which users the bound groups hold (directly or nested): needed
    /// only when some user is pending, so a run with nothing to do skips it.
    pub fn load_roles(&mut self, connection: &dyn Db, tenant: &str) -> Result<(), Error> {
        let mut roles_by_user: HashMap<String, BTreeSet<String>> = HashMap::new();
        for binding in &self.bindings.bindings {
            let groups = match binding.by {
                GroupMatch::DisplayName => {
                    directory::id_by_name(connection, tenant, ResourceKind::Group, &binding.group)?
                        .into_iter()
                        .collect()
                }
                GroupMatch::ExternalId => directory::ids_by_external_id(
                    connection,
                    tenant,
                    ResourceKind::Group,
                    &binding.group,
                )?,
            };
            for group in groups {
                for user in directory::users_under(connection, tenant, &group)? {
                    roles_by_user.entry(user).or_default().insert(binding.role.clone());
                }
            }
        }
        self.roles_by_user = roles_by_user;
        self.load_claims(connection, tenant)
    }

    fn unique_rules(&self) -> impl Iterator<Item = &PropertyRule> {
        self.compiled.iter().map(|compiled| &compiled.rule).filter(|rule| rule.unique)
    }

    /// The values of unique properties the tenant's members hold now.
    fn load_claims(&mut self, connection: &dyn Db, tenant: &str) -> Result<(), Error> {
        let names: Vec<String> = self.unique_rules().map(|rule| rule.property.clone()).collect();
        let mut claims: Claims = names.iter().map(|name| (name.clone(), HashMap::new())).collect();
        if !names.is_empty() {
            for (user_id, properties) in members::member_properties(connection, tenant)? {
                for name in &names {
                    if let (Some(value), Some(holders)) =
                        (properties.get(name), claims.get_mut(name))
                    {
                        holders.insert(unique_key(value), user_id.clone());
                    }
                }
            }
        }
        self.claims = Mutex::new(claims);
        Ok(())
    }

    /// Why these properties cannot be `user_id`'s: a unique value another
    /// member holds.
    fn taken(&self, user_id: &str, properties: &Map<String, Value>) -> Option<String> {
        let claims = self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.unique_rules().find_map(|rule| {
            let value = properties.get(&rule.property)?;
            let holder = claims.get(&rule.property)?.get(&unique_key(value))?;
            (holder != user_id).then(|| {
                format!(
                    "{} ({}): {value} is already another member's, and it must be unique",
                    rule.property, rule.source
                )
            })
        })
    }

    /// Records what a decision leaves `user_id`'s member holding: its
    /// unique values (`Some`), or nothing (`None`: it left).
    fn claim(&self, user_id: &str, properties: Option<&Map<String, Value>>) {
        let mut claims = self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for rule in self.unique_rules() {
            let Some(holders) = claims.get_mut(&rule.property) else { continue };
            holders.retain(|_, holder| holder != user_id);
            if let Some(value) = properties.and_then(|properties| properties.get(&rule.property)) {
                holders.insert(unique_key(value), user_id.to_owned());
            }
        }
    }

    /// The properties the mapping gives a user's document, or why it cannot.
    pub fn properties(&self, document: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut properties = Map::new();
        for CompiledRule { rule, path, filter, default } in &self.compiled {
            let selected = eval::select(ResourceKind::User, document, path, filter.as_ref());
            let value = convert(rule, selected)
                .map_err(|reason| format!("{} ({}): {reason}", rule.property, rule.source))?
                .or_else(|| default.clone());
            if value.is_none() && rule.required {
                return Err(format!(
                    "{} ({}): required, and the user has no value",
                    rule.property, rule.source
                ));
            }
            if let Some(value) = value {
                if !is_allowed(rule, &value) {
                    return Err(format!(
                        "{} ({}): {} is not one of the allowed values {}",
                        rule.property,
                        rule.source,
                        value,
                        Value::Array(rule.allowed.clone().unwrap_or_default())
                    ));
                }
                properties.insert(rule.property.clone(), value);
            }
        }
        Ok(properties)
    }

    /// A user's roles: those of its bound groups, else the default role.
    pub fn roles(&self, user_id: &str) -> Vec<String> {
        match self.roles_by_user.get(user_id) {
            Some(roles) if !roles.is_empty() => roles.iter().cloned().collect(),
            _ => self.bindings.default_role.iter().cloned().collect(),
        }
    }

    pub fn grace_until(&self, now: Timestamp) -> String {
        let days = i64::from(self.settings.grace_days);
        let until = now
            .checked_add(jiff::SignedDuration::from_hours(days.saturating_mul(24)))
            .unwrap_or(now);
        events::time::format_millis(until)
    }
}

fn stored<T: serde::de::DeserializeOwned + Default>(
    connection: &dyn Db,
    tenant: &str,
    kind: &str,
) -> Result<(T, u64), Error> {
    let stored = members::setting(connection, tenant, kind)?;
    let position = stored.as_ref().map_or(0, |(_, position)| *position);
    Ok((stored_or_default(stored.map(|(value, _)| value))?, position))
}

/// What happens to a member's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Join,
    Restore,
    Update,
    Disable,
    Enable,
    Leave,
    Purge,
    Rejected,
    Held,
}

impl Action {
    pub fn is_deprovisioning(self) -> bool {
        matches!(self, Action::Disable | Action::Leave)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoleChange {
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// One member's pending change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Effect {
    pub user_id: String,
    /// `None` for a join (its id is made when it is applied) and for a
    /// rejected join.
    pub member_id: Option<String>,
    pub user_name: String,
    pub action: Action,
    /// Each changed property's `from` and `to`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub changes: BTreeMap<String, PropertyChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<RoleChange>,
    /// Why a change is rejected or held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub plan: Plan,
}

/// What applying an effect needs beyond what the preview shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub member: Option<MemberStub>,
    pub external_id: Option<String>,
    pub properties: Map<String, Value>,
    pub roles: Vec<String>,
    /// Set when the SCIM user's userName or externalId changed.
    pub renamed: Option<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberStub {
    pub member_id: String,
    pub version: u64,
    /// The position of the member's last event: the SCIM events after it
    /// are what a change now rests on.
    pub last_position: u64,
}

impl From<&MemberRow> for MemberStub {
    fn from(member: &MemberRow) -> MemberStub {
        MemberStub {
            member_id: member.member_id.clone(),
            version: member.version,
            last_position: member.last_position,
        }
    }
}

/// The user behind an effect, as the directory holds it.
#[derive(Debug, Clone)]
pub struct UserNow {
    pub external_id: Option<String>,
    pub user_name: String,
    pub active: bool,
    pub document: Map<String, Value>,
}

impl UserNow {
    fn of(row: ResourceRow) -> UserNow {
        let active = !matches!(row.document.get("active"), Some(Value::Bool(false)));
        UserNow {
            external_id: row.external_id,
            user_name: directory::unique_name(ResourceKind::User, &row.document).to_owned(),
            active,
            document: row.document,
        }
    }
}

/// The users and members of a sorted run of user ids, read ahead in two
/// range reads of the primary key and the members' user index instead of
/// two point queries per user: what [`effect`] would have looked up, so
/// the decisions are the same (a run's users are dense in the id order:
/// a first run is every user). A range that holds many more rows than ids
/// (a sparse run) is not read ahead; its users are looked up one by one.
#[derive(Default)]
pub struct ReadAhead {
    /// Each user with its mapped properties (or why they cannot be), as
    /// [`Rules::properties`] answers: parsed and mapped ahead on two
    /// threads, the part of deciding that needs no other user. Its
    /// document is left empty once mapped.
    users: HashMap<String, (UserNow, Mapped)>,
    members: HashMap<String, MemberRow>,
    /// The ids whose user and member are in the maps (absent: none).
    covered: HashSet<String>,
    /// No member of the tenant had left when this was read, and none has
    /// since ([`ReadAhead::someone_left`]): no user can restore a leaver,
    /// so none is looked up (a query per joining user otherwise).
    no_leavers: bool,
}

/// Rows a range may hold per id asked for before it is not worth reading.
const READ_AHEAD_SPREAD: usize = 4;

/// A user's mapped properties, or why they cannot be mapped.
type Mapped = Result<Map<String, Value>, String>;

/// A user as [`ReadAhead::take`] hands it out: mapped already if it was
/// read ahead.
type Taken = (UserNow, Option<Mapped>);

/// Parses and maps `rows`, keeping those in `wanted`: the documents split
/// in two halves, one on a second thread (the machine's other core; where
/// no thread can be started, both here), as this is most of a decision's
/// work.
fn parse_and_map(
    rules: &Rules,
    rows: Vec<directory::UnparsedRow>,
    wanted: &HashSet<&str>,
) -> Result<Vec<(String, UserNow, Mapped)>, Error> {
    let work = |rows: &[directory::UnparsedRow]| -> Result<Vec<_>, Error> {
        rows.iter()
            .filter(|row| wanted.contains(row.id.as_str()))
            .map(|row| {
                let parsed = row.parse().map_err(|error| {
                    Error::Internal(format!(
                        "the stored document of user {} is not JSON: {error}",
                        row.id
                    ))
                })?;
                let mut user = UserNow::of(parsed);
                let mapped = rules.properties(&user.document);
                // Nothing after the mapping reads the document: it is
                // freed here, on the thread that parsed it (a fifth of
                // the deciding thread's time otherwise).
                user.document = Map::new();
                Ok((row.id.clone(), user, mapped))
            })
            .collect()
    };
    // Two halves are worth a thread only with enough in them.
    if rows.len() < 64 {
        return work(&rows);
    }
    // Halves: a larger share for the helper (this thread has read the
    // rows already) measured no faster.
    let (front, back) = rows.split_at(rows.len() / 2);
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("rollcall-decide".to_owned())
            .spawn_scoped(scope, || work(back));
        let mut all = work(front)?;
        let rest = match helper {
            Ok(helper) => helper
                .join()
                .map_err(|_| Error::Internal("a thread mapping users stopped".to_owned()))??,
            Err(_) => work(back)?,
        };
        all.extend(rest);
        Ok(all)
    })
}

impl ReadAhead {
    /// Reads ahead for `ids`, which must be sorted (a `BTreeSet`'s order,
    /// which is SQLite's binary order of the same text), and maps each
    /// user under `rules`.
    pub fn read(
        connection: &dyn Db,
        tenant: &str,
        rules: &Rules,
        ids: &[String],
    ) -> Result<ReadAhead, Error> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(ReadAhead::default());
        };
        let limit = ids.len().saturating_mul(READ_AHEAD_SPREAD).max(16);
        let rows =
            directory::in_id_range(connection, tenant, ResourceKind::User, first, last, limit)?;
        if rows.len() >= limit {
            return Ok(ReadAhead::default());
        }
        let (members, complete) =
            members::members_of_users_in_range(connection, tenant, first, last, limit)?;
        if !complete {
            return Ok(ReadAhead::default());
        }
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(ReadAhead {
            no_leavers: !members::any_left(connection, tenant)?,
            users: parse_and_map(rules, rows, &wanted)?
                .into_iter()
                .map(|(id, user, mapped)| (id, (user, mapped)))
                .collect(),
            members: members
                .into_iter()
                .filter(|member| wanted.contains(member.user_id.as_str()))
                .map(|member| (member.user_id.clone(), member))
                .collect(),
            covered: ids.iter().cloned().collect(),
        })
    }

    /// Says that a member has left since this was read (a run applying a
    /// leave), so later users of the batch look for leavers again.
    pub fn someone_left(&mut self) {
        self.no_leavers = false;
    }

    /// The user and its member (as [`members::member_of_user`] answers),
    /// from what was read ahead, or looked up now.
    fn take(
        &mut self,
        connection: &dyn Db,
        tenant: &str,
        user_id: &str,
    ) -> Result<(Option<Taken>, Option<MemberRow>), Error> {
        if self.covered.remove(user_id) {
            let user = self.users.remove(user_id).map(|(user, mapped)| (user, Some(mapped)));
            return Ok((user, self.members.remove(user_id)));
        }
        let user = directory::get(connection, tenant, ResourceKind::User, user_id)?
            .map(|row| (UserNow::of(row), None));
        Ok((user, members::member_of_user(connection, tenant, user_id)?))
    }
}

/// The pending change of one user's member, `None` when there is none:
/// reads what [`decide`] needs (from `ahead` where it holds the user), and
/// lets it decide. `now` (the events' format) says which leavers are still
/// within their grace.
pub fn effect(
    connection: &dyn Db,
    tenant: &str,
    rules: &Rules,
    user_id: &str,
    now: &str,
    ahead: &mut ReadAhead,
) -> Result<Option<Effect>, Error> {
    let (user, member) = ahead.take(connection, tenant, user_id)?;
    let (user, mapped) = user.map_or((None, None), |(user, mapped)| (Some(user), mapped));
    let member = member
        .filter(|member| matches!(member.status, MemberStatus::Active | MemberStatus::Disabled));
    // Only an active user without a member may restore a leaver.
    let left = match (&member, &user) {
        _ if ahead.no_leavers => None,
        (None, Some(UserNow { active: true, external_id: Some(external_id), .. })) => {
            members::left_member_by_external_id(connection, tenant, external_id, now)?
        }
        _ => None,
    };
    Ok(decide_mapped(rules, user_id, user, mapped, member, left))
}

/// The decision itself, from state alone: `user` as the directory holds
/// it (`None`: deleted), its `member` if active or disabled, and `left`, a
/// leaver within its grace with the user's externalId (looked up only
/// when there is no member and the user is active).
pub fn decide(
    rules: &Rules,
    user_id: &str,
    user: Option<UserNow>,
    member: Option<MemberRow>,
    left: Option<MemberRow>,
) -> Option<Effect> {
    decide_mapped(rules, user_id, user, None, member, left)
}

/// [`decide`], with the user's properties as [`Rules::properties`]
/// mapped them ahead (`None`: mapped here).
fn decide_mapped(
    rules: &Rules,
    user_id: &str,
    user: Option<UserNow>,
    mapped: Option<Mapped>,
    member: Option<MemberRow>,
    left: Option<MemberRow>,
) -> Option<Effect> {
    let base = |action: Action, member: Option<&MemberRow>, user_name: &str| Effect {
        user_id: user_id.to_owned(),
        member_id: member.map(|member| member.member_id.clone()),
        user_name: user_name.to_owned(),
        action,
        changes: BTreeMap::new(),
        roles: None,
        reason: None,
        plan: Plan { member: member.map(MemberStub::from), ..Plan::default() },
    };
    let Some(user) = user else {
        // Deleted in the IdP: its member leaves (once), and lets go of its
        // unique values.
        if member.is_some() {
            rules.claim(user_id, None);
        }
        return member.map(|member| base(Action::Leave, Some(&member), &member.user_name));
    };
    let properties = mapped.unwrap_or_else(|| rules.properties(&user.document));
    let properties = properties.and_then(|properties| match rules.taken(user_id, &properties) {
        Some(reason) => Err(reason),
        None => Ok(properties),
    });
    if let Ok(properties) = &properties {
        rules.claim(user_id, Some(properties));
    }
    let roles = rules.roles(user_id);
    let (member, restoring) = match member {
        Some(member) => (Some(member), false),
        None if user.active => {
            let restoring = left.is_some();
            (left, restoring)
        }
        // A user created inactive is not a member until it is activated.
        None => return None,
    };
    let Some(member) = member else {
        let mut effect = base(Action::Join, None, &user.user_name);
        match properties {
            Ok(properties) => {
                effect.plan.properties = properties;
                effect.plan.roles = roles;
                effect.plan.external_id = user.external_id;
            }
            Err(reason) => {
                effect.action = Action::Rejected;
                effect.reason = Some(reason);
            }
        }
        return Some(effect);
    };
    let lifecycle = if restoring {
        Some(Action::Restore)
    } else {
        match (member.status, user.active) {
            (MemberStatus::Active, false) => Some(Action::Disable),
            (MemberStatus::Disabled, true) => Some(Action::Enable),
            _ => None,
        }
    };
    let mut effect = base(lifecycle.unwrap_or(Action::Update), Some(&member), &user.user_name);
    match properties {
        Ok(properties) => {
            effect.changes = diff(&member.properties, &properties);
            effect.plan.properties = properties;
        }
        Err(reason) => {
            // A deactivation still disables: a bad value must never keep
            // a deprovisioned user in. Anything else waits for a fix.
            effect.reason = Some(reason);
            if lifecycle != Some(Action::Disable) {
                effect.action = Action::Rejected;
            }
            return Some(effect);
        }
    }
    if member.roles != roles {
        effect.roles = Some(RoleChange { from: member.roles.clone(), to: roles.clone() });
    }
    effect.plan.roles = roles;
    // A restore records the new userName itself, and its externalId is the
    // one it was found by: an update beside it would say nothing new.
    if (!restoring && member.user_name != user.user_name) || member.external_id != user.external_id
    {
        effect.plan.renamed = Some((user.user_name.clone(), user.external_id.clone()));
    }
    let changed = lifecycle.is_some()
        || !effect.changes.is_empty()
        || effect.roles.is_some()
        || effect.plan.renamed.is_some();
    changed.then_some(effect)
}

/// The property changes from `before` to `after` (absent is `null`).
pub fn diff(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> BTreeMap<String, PropertyChange> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let from = before.get(name).cloned().unwrap_or(Value::Null);
            let to = after.get(name).cloned().unwrap_or(Value::Null);
            (from != to).then(|| (name.clone(), PropertyChange { from, to }))
        })
        .collect()
}

/// The effects of purging leavers whose grace ended by `now`.
pub fn purges(connection: &dyn Db, tenant: &str, now: &str) -> Result<Vec<Effect>, Error> {
    Ok(members::leavers_past_grace(connection, tenant, now)?
        .into_iter()
        .map(|member| Effect {
            user_id: member.user_id.clone(),
            member_id: Some(member.member_id.clone()),
            user_name: member.user_name.clone(),
            action: Action::Purge,
            changes: BTreeMap::new(),
            roles: None,
            reason: None,
            plan: Plan { member: Some(MemberStub::from(&member)), ..Plan::default() },
        })
        .collect())
}

/// How many effects of each kind, as the API and the run record show them.
/// A kind missing from a record is zero (a run that has applied no batch
/// records `{}`); anything else that is not a count is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Counts {
    pub join: u64,
    pub restore: u64,
    pub update: u64,
    pub role_change: u64,
    pub disable: u64,
    pub enable: u64,
    pub leave: u64,
    pub purge: u64,
    pub rejected: u64,
    pub held: u64,
}

impl Counts {
    pub fn add(&mut self, effect: &Effect) {
        let slot = match effect.action {
            Action::Join => &mut self.join,
            Action::Restore => &mut self.restore,
            Action::Update => &mut self.update,
            Action::Disable => &mut self.disable,
            Action::Enable => &mut self.enable,
            Action::Leave => &mut self.leave,
            Action::Purge => &mut self.purge,
            Action::Rejected => &mut self.rejected,
            Action::Held => &mut self.held,
        };
        // An update is counted once, whether it stands alone or comes with
        // a lifecycle change; a change of roles alone is a role change.
        let updated = !effect.changes.is_empty()
            || (effect.action == Action::Update && effect.roles.is_none());
        if effect.action != Action::Update {
            *slot += 1;
        }
        if updated && !matches!(effect.action, Action::Rejected | Action::Held) {
            self.update += 1;
        }
        if effect.roles.is_some() && !matches!(effect.action, Action::Rejected | Action::Held) {
            self.role_change += 1;
        }
    }

    pub fn merge(&mut self, other: &Counts) {
        self.join += other.join;
        self.restore += other.restore;
        self.update += other.update;
        self.role_change += other.role_change;
        self.disable += other.disable;
        self.enable += other.enable;
        self.leave += other.leave;
        self.purge += other.purge;
        self.rejected += other.rejected;
        self.held += other.held;
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    //! Every transition of [`decide`], one row each: what the directory
    //! holds, what the member is, and the effect that closes the gap.

    use serde_json::json;

    use super::*;
    use crate::sync::config::{Binding, PropertyRule, PropertyType};

    use projections::directory::schema::ENTERPRISE_USER_SCHEMA as ENTERPRISE;

    /// Two properties (one with allowed values) and one bound group.
    fn rules() -> Rules {
        let rule = |property: &str, source: &str| PropertyRule {
            property: property.to_owned(),
            source: source.to_owned(),
            kind: PropertyType::String,
            default: None,
            allowed: None,
            split: None,
            required: false,
            unique: false,
        };
        let mut kind = rule("kind", "userType");
        kind.allowed = Some(vec![json!("Staff"), json!("Contractor")]);
        let mapping = Mapping {
            properties: vec![rule("department", &format!("{ENTERPRISE}:department")), kind],
            app_owned: Vec::new(),
        };
        let bindings = RoleBindings {
            roles: vec!["admin".to_owned(), "viewer".to_owned()],
            default_role: Some("viewer".to_owned()),
            bindings: vec![Binding {
                group: "Admins".to_owned(),
                by: GroupMatch::DisplayName,
                role: "admin".to_owned(),
            }],
        };
        let mut rules = Rules::new(mapping, bindings, SyncSettings::default()).unwrap();
        rules.roles_by_user.insert("u-admin".to_owned(), BTreeSet::from(["admin".to_owned()]));
        rules
    }

    fn user(active: bool, department: &str, kind: &str) -> UserNow {
        let document = json!({
            "userName": "ann@example.com",
            "active": active,
            "userType": kind,
            ENTERPRISE: {"department": department},
        });
        UserNow {
            external_id: Some("ext-ann".to_owned()),
            user_name: "ann@example.com".to_owned(),
            active,
            document: document.as_object().unwrap().clone(),
        }
    }

    fn member(status: MemberStatus, department: &str) -> MemberRow {
        let properties = json!({"department": department, "kind": "Staff"});
        MemberRow {
            member_id: "m-1".to_owned(),
            user_id: "u-1".to_owned(),
            external_id: Some("ext-ann".to_owned()),
            user_name: "ann@example.com".to_owned(),
            status,
            properties: properties.as_object().unwrap().clone(),
            roles: vec!["viewer".to_owned()],
            app_properties: Map::new(),
            joined_at: "2026-01-01T00:00:00.000Z".to_owned(),
            left_at: None,
            grace_until: None,
            disabled_at: None,
            revoke_sessions: false,
            updated_at: "2026-01-01T00:00:00.000Z".to_owned(),
            version: 1,
            last_position: 1,
            erased_at: None,
        }
    }

    fn left() -> MemberRow {
        MemberRow {
            member_id: "m-left".to_owned(),
            left_at: Some("2026-02-01T00:00:00.000Z".to_owned()),
            grace_until: Some("2026-03-01T00:00:00.000Z".to_owned()),
            ..member(MemberStatus::Left, "Ops")
        }
    }

    /// What a row expects: the action (`None`: no effect), the member it
    /// names, and whether it carries a reason, property changes, a role
    /// change and a rename.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        action: Option<Action>,
        member_id: Option<&'static str>,
        reason: bool,
        changes: bool,
        roles: bool,
        renamed: bool,
    }

    fn none() -> Outcome {
        Outcome {
            action: None,
            member_id: None,
            reason: false,
            changes: false,
            roles: false,
            renamed: false,
        }
    }

    fn outcome(action: Action, member_id: Option<&'static str>) -> Outcome {
        Outcome { action: Some(action), member_id, ..none() }
    }

    fn observed(effect: Option<Effect>) -> Outcome {
        let Some(effect) = effect else { return none() };
        let member_id = effect.member_id.as_deref().map(|id| match id {
            "m-1" => "m-1",
            "m-left" => "m-left",
            other => panic!("unexpected member {other}"),
        });
        Outcome {
            action: Some(effect.action),
            member_id,
            reason: effect.reason.is_some(),
            changes: !effect.changes.is_empty(),
            roles: effect.roles.is_some(),
            renamed: effect.plan.renamed.is_some(),
        }
    }

    #[test]
    fn every_transition_of_a_member() {
        use MemberStatus::{Active, Disabled};
        let renamed_user = || UserNow {
            user_name: "ann.new@example.com".to_owned(),
            ..user(true, "R&D", "Staff")
        };
        let new_external_id =
            || UserNow { external_id: Some("ext-2".to_owned()), ..user(true, "R&D", "Staff") };
        // The user id, what the row shows, the user, its member, a leaver
        // to restore, and what must happen.
        type Row = (
            &'static str,
            &'static str,
            Option<UserNow>,
            Option<MemberRow>,
            Option<MemberRow>,
            Outcome,
        );
        let rows: Vec<Row> = vec![
            ("u-1", "deleted, never a member", None, None, None, none()),
            (
                "u-1",
                "deleted: the member leaves",
                None,
                Some(member(Active, "R&D")),
                None,
                outcome(Action::Leave, Some("m-1")),
            ),
            (
                "u-1",
                "deleted while disabled: leaves",
                None,
                Some(member(Disabled, "R&D")),
                None,
                outcome(Action::Leave, Some("m-1")),
            ),
            (
                "u-1",
                "new and active: joins",
                Some(user(true, "R&D", "Staff")),
                None,
                None,
                outcome(Action::Join, None),
            ),
            (
                "u-1",
                "new with a disallowed value: rejected",
                Some(user(true, "R&D", "Gold")),
                None,
                None,
                Outcome { reason: true, ..outcome(Action::Rejected, None) },
            ),
            (
                "u-1",
                "created inactive: not a member",
                Some(user(false, "R&D", "Staff")),
                None,
                None,
                none(),
            ),
            (
                "u-1",
                "inactive, even with a leaver to restore",
                Some(user(false, "R&D", "Staff")),
                None,
                Some(left()),
                none(),
            ),
            (
                "u-1",
                "re-created within the grace: restored",
                Some(user(true, "Ops", "Staff")),
                None,
                Some(left()),
                outcome(Action::Restore, Some("m-left")),
            ),
            (
                "u-1",
                "restored with new values: the changes ride along",
                Some(user(true, "R&D", "Staff")),
                None,
                Some(left()),
                Outcome { changes: true, ..outcome(Action::Restore, Some("m-left")) },
            ),
            (
                "u-1",
                "restored under a new userName: no separate rename",
                Some(UserNow {
                    user_name: "ann.new@example.com".to_owned(),
                    ..user(true, "Ops", "Staff")
                }),
                None,
                Some(left()),
                outcome(Action::Restore, Some("m-left")),
            ),
            (
                "u-1",
                "nothing changed",
                Some(user(true, "R&D", "Staff")),
                Some(member(Active, "R&D")),
                None,
                none(),
            ),
            (
                "u-1",
                "a property changed: updated",
                Some(user(true, "Ops", "Staff")),
                Some(member(Active, "R&D")),
                None,
                Outcome { changes: true, ..outcome(Action::Update, Some("m-1")) },
            ),
            (
                "u-1",
                "deactivated: disabled",
                Some(user(false, "R&D", "Staff")),
                Some(member(Active, "R&D")),
                None,
                outcome(Action::Disable, Some("m-1")),
            ),
            (
                "u-1",
                "deactivated with a change: disabled and updated",
                Some(user(false, "Ops", "Staff")),
                Some(member(Active, "R&D")),
                None,
                Outcome { changes: true, ..outcome(Action::Disable, Some("m-1")) },
            ),
            (
                "u-1",
                "deactivated with a disallowed value: still disabled",
                Some(user(false, "R&D", "Gold")),
                Some(member(Active, "R&D")),
                None,
                Outcome { reason: true, ..outcome(Action::Disable, Some("m-1")) },
            ),
            (
                "u-1",
                "a disallowed value on an active member: rejected",
                Some(user(true, "R&D", "Gold")),
                Some(member(Active, "R&D")),
                None,
                Outcome { reason: true, ..outcome(Action::Rejected, Some("m-1")) },
            ),
            (
                "u-1",
                "reactivated: enabled",
                Some(user(true, "R&D", "Staff")),
                Some(member(Disabled, "R&D")),
                None,
                outcome(Action::Enable, Some("m-1")),
            ),
            (
                "u-1",
                "reactivated with a disallowed value: rejected, stays out",
                Some(user(true, "R&D", "Gold")),
                Some(member(Disabled, "R&D")),
                None,
                Outcome { reason: true, ..outcome(Action::Rejected, Some("m-1")) },
            ),
            (
                "u-1",
                "still inactive: nothing",
                Some(user(false, "R&D", "Staff")),
                Some(member(Disabled, "R&D")),
                None,
                none(),
            ),
            (
                "u-1",
                "renamed in the IdP: the member follows",
                Some(renamed_user()),
                Some(member(Active, "R&D")),
                None,
                Outcome { renamed: true, ..outcome(Action::Update, Some("m-1")) },
            ),
            (
                "u-1",
                "a new externalId: the member follows",
                Some(new_external_id()),
                Some(member(Active, "R&D")),
                None,
                Outcome { renamed: true, ..outcome(Action::Update, Some("m-1")) },
            ),
            (
                "u-admin",
                "now in a bound group: a role change",
                Some(user(true, "R&D", "Staff")),
                Some(member(Active, "R&D")),
                None,
                Outcome { roles: true, ..outcome(Action::Update, Some("m-1")) },
            ),
            (
                "u-admin",
                "a role change while disabled: recorded with the enable",
                Some(user(true, "R&D", "Staff")),
                Some(member(Disabled, "R&D")),
                None,
                Outcome { roles: true, ..outcome(Action::Enable, Some("m-1")) },
            ),
        ];
        let rules = rules();
        for (user_id, name, user, member, left, expected) in rows {
            let effect = decide(&rules, user_id, user, member, left);
            assert_eq!(observed(effect), expected, "{name}");
        }
    }

    #[test]
    fn a_join_carries_what_the_mapping_and_bindings_give() {
        let effect = decide(&rules(), "u-admin", Some(user(true, "R&D", "Staff")), None, None)
            .expect("a join");
        assert_eq!(
            effect.plan.properties,
            json!({"department": "R&D", "kind": "Staff"}).as_object().unwrap().clone()
        );
        assert_eq!(effect.plan.roles, ["admin"]);
        assert_eq!(effect.plan.external_id.as_deref(), Some("ext-ann"));
        let effect = decide(&rules(), "u-1", Some(user(true, "R&D", "Staff")), None, None).unwrap();
        assert_eq!(effect.plan.roles, ["viewer"], "the default role");
        let rejected =
            decide(&rules(), "u-1", Some(user(true, "R&D", "Gold")), None, None).unwrap();
        let reason = rejected.reason.unwrap();
        assert!(reason.contains("kind") && reason.contains("\"Gold\""), "{reason}");
    }

    #[test]
    fn an_update_names_each_change_from_and_to() {
        let effect = decide(
            &rules(),
            "u-1",
            Some(user(true, "Ops", "Staff")),
            Some(member(MemberStatus::Active, "R&D")),
            None,
        )
        .unwrap();
        let change = &effect.changes["department"];
        assert_eq!((&change.from, &change.to), (&json!("R&D"), &json!("Ops")));
        assert_eq!(effect.changes.len(), 1);
    }

    /// A run's recorded counts read back exactly, `{}` (no batch yet) as
    /// zeros; a record that is not counts is an error, not zeros.
    #[test]
    fn recorded_counts_read_back_or_fail_loudly() {
        let counts = Counts { join: 3, held: 2, ..Counts::default() };
        assert_eq!(serde_json::from_value::<Counts>(counts.to_value()).unwrap(), counts);
        assert_eq!(serde_json::from_value::<Counts>(json!({})).unwrap(), Counts::default());
        for bad in [json!({"join": "3"}), json!({"jion": 3}), json!({"join": -1}), json!(null)] {
            assert!(serde_json::from_value::<Counts>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_count_each_effect_once_and_role_changes_apart() {
        let mut counts = Counts::default();
        let rules = rules();
        let active = || Some(member(MemberStatus::Active, "R&D"));
        for (user_id, user) in [
            ("u-1", user(true, "Ops", "Staff")),     // update
            ("u-admin", user(true, "R&D", "Staff")), // role change only
            ("u-admin", user(true, "Ops", "Staff")), // update and role change
            ("u-1", user(false, "Ops", "Staff")),    // disable with an update
            ("u-1", user(true, "R&D", "Gold")),      // rejected
        ] {
            counts.add(&decide(&rules, user_id, Some(user), active(), None).unwrap());
        }
        let expected =
            Counts { update: 3, role_change: 2, disable: 1, rejected: 1, ..Counts::default() };
        assert_eq!(counts, expected);
    }

    /// `required` rejects a user without a value (after the default);
    /// `unique` rejects a value another member holds, case-folded, and a
    /// leaver's value is free again: the decisions of one run see each
    /// other's claims, in order.
    #[test]
    fn required_and_unique_values() {
        let mut rules = rules();
        let mut department = rules.mapping.properties[0].clone();
        department.required = true;
        department.unique = true;
        rules = rules
            .with_mapping(Mapping { properties: vec![department], app_owned: Vec::new() })
            .unwrap();
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        projections::functions::register(&connection).unwrap();
        projections::schema::migrate(&connection).unwrap();
        rules.load_claims(&connection, "t").unwrap();
        let mut without = user(true, "x", "Staff");
        without.document.remove(ENTERPRISE);
        let refused = decide(&rules, "u-none", Some(without), None, None).unwrap();
        assert_eq!(refused.action, Action::Rejected);
        assert!(refused.reason.unwrap().contains("required"), "no value: rejected");

        let first = decide(&rules, "u-1", Some(user(true, "Ωmega", "Staff")), None, None).unwrap();
        assert_eq!(first.action, Action::Join);
        let second = decide(&rules, "u-2", Some(user(true, "ωMEGA", "Staff")), None, None).unwrap();
        assert_eq!(second.action, Action::Rejected, "the same value, folded");
        assert!(second.reason.unwrap().contains("must be unique"));
        let again = decide(&rules, "u-1", Some(user(true, "Ωmega", "Staff")), None, None).unwrap();
        assert_eq!(again.action, Action::Join, "a user's own value is not taken from it");

        // u-1's member leaves: the value is free for u-2.
        let left = decide(&rules, "u-1", None, Some(member(MemberStatus::Active, "Ωmega")), None);
        assert_eq!(left.unwrap().action, Action::Leave);
        let freed = decide(&rules, "u-2", Some(user(true, "ωMEGA", "Staff")), None, None).unwrap();
        assert_eq!(freed.action, Action::Join);
    }
}

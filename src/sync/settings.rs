//! The commands that change what Synchronize works with: a tenant's
//! mapping, role bindings and run settings, and a member's app-owned
//! properties. Each validates, compares with what is recorded, and appends
//! an event only if something changes.

use std::collections::BTreeMap;

use events::event::{
    AttributeMappingChanged, Event, MemberAppPropertiesChanged, PropertyChange, RoleBindingChanged,
    ScheduleChanged,
};
use events::{CommandContext, ExpectedVersion, Pending};
use projections::members::{self, MemberRow, MemberStatus};
use serde_json::{Map, Value};

use super::config::{Mapping, RoleBindings, SyncSettings, stored_or_default};
use crate::error::Error;
use crate::store::{Store, record};

/// Which setting a command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Mapping,
    Roles,
    Sync,
}

impl Setting {
    fn kind(self) -> &'static str {
        match self {
            Setting::Mapping => "mapping",
            Setting::Roles => "roles",
            Setting::Sync => "sync",
        }
    }

    fn stream(self) -> &'static str {
        match self {
            Setting::Mapping => "config:mapping",
            Setting::Roles => "config:roles",
            Setting::Sync => "config:sync",
        }
    }
}

/// A tenant's current setting (the default until one is recorded).
pub fn current(store: &Store, tenant: &str, setting: Setting) -> Result<Value, Error> {
    let stored = store
        .read(|connection| Ok(members::setting(connection, tenant, setting.kind())?))?
        .map(|(value, _)| value);
    Ok(match setting {
        Setting::Mapping => to_value(&stored_or_default::<Mapping>(stored)?),
        Setting::Roles => to_value(&stored_or_default::<RoleBindings>(stored)?),
        Setting::Sync => to_value(&stored_or_default::<SyncSettings>(stored)?),
    })
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Reads and validates a setting as an admin sent it, in its canonical
/// JSON (defaults filled in).
pub fn parse(setting: Setting, body: Value) -> Result<Value, Error> {
    let invalid = |error: serde_json::Error| Error::invalid(format!("{}: {error}", setting.kind()));
    Ok(match setting {
        Setting::Mapping => {
            let mapping: Mapping = serde_json::from_value(body).map_err(invalid)?;
            mapping.validate()?;
            to_value(&mapping)
        }
        Setting::Roles => {
            let bindings: RoleBindings = serde_json::from_value(body).map_err(invalid)?;
            bindings.validate()?;
            to_value(&bindings)
        }
        Setting::Sync => {
            let settings: SyncSettings = serde_json::from_value(body).map_err(invalid)?;
            settings.validate()?;
            to_value(&settings)
        }
    })
}

/// Records a new value of a setting; answers whether it changed anything.
pub fn set(
    store: &Store,
    tenant: &str,
    setting: Setting,
    body: Value,
    context: CommandContext,
) -> Pending<bool, Error> {
    let value = match parse(setting, body) {
        Ok(value) => value,
        Err(error) => return Pending::ready(Err(events::ExecuteError::Command(error))),
    };
    let lane = tenant;
    let tenant = tenant.to_owned();
    store.command(Some(lane), move |tx| {
        let recorded = members::setting(tx.db(), &tenant, setting.kind())?;
        let current = match recorded {
            Some((value, _)) => value,
            None => parse(setting, Value::Object(Map::new())).unwrap_or(Value::Null),
        };
        if current == value {
            return Ok(false);
        }
        let event = match setting {
            Setting::Mapping => {
                Event::AttributeMappingChanged(AttributeMappingChanged { mapping: value })
            }
            Setting::Roles => Event::RoleBindingChanged(RoleBindingChanged { bindings: value }),
            Setting::Sync => Event::ScheduleChanged(ScheduleChanged { settings: value }),
        };
        let version = tx.stream_version(&tenant, setting.stream())?;
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        record(tx, &tenant, setting.stream(), expected, &[event], &context)?;
        Ok(true)
    })
}

/// Changes a member's app-owned properties: `null` removes one. A mapped
/// property is refused (Synchronize owns it), as is a name the mapping
/// does not list as app-owned.
pub fn set_app_properties(
    store: &Store,
    tenant: &str,
    member_id: &str,
    properties: Map<String, Value>,
    context: CommandContext,
) -> Pending<MemberRow, Error> {
    let lane = tenant;
    let tenant = tenant.to_owned();
    let member_id = member_id.to_owned();
    store.command(Some(lane), move |tx| {
        let not_found = || Error::not_found(format!("member {member_id}"));
        let member = members::member(tx.db(), &tenant, &member_id)?.ok_or_else(not_found)?;
        if member.status == MemberStatus::Purged {
            return Err(Error::conflict(format!(
                "member {member_id} was purged; its properties are gone"
            )));
        }
        let mapping: Mapping = stored_or_default(
            members::setting(tx.db(), &tenant, "mapping")?.map(|(value, _)| value),
        )?;
        let mut changes = BTreeMap::new();
        for (name, to) in properties {
            if let Some(rule) = mapping.properties.iter().find(|rule| rule.property == name) {
                return Err(Error::conflict(format!(
                    "property {name:?} is mapped from the SCIM attribute {:?}: Synchronize owns \
                     it; change it in the identity provider, or change the mapping",
                    rule.source
                )));
            }
            if !mapping.app_owned.contains(&name) {
                return Err(Error::invalid(format!(
                    "property {name:?} is not app-owned; the app-owned properties are {:?}",
                    mapping.app_owned
                )));
            }
            let from = member.app_properties.get(&name).cloned().unwrap_or(Value::Null);
            if from != to {
                changes.insert(name, PropertyChange { from, to });
            }
        }
        if changes.is_empty() {
            return Ok(member);
        }
        record(
            tx,
            &tenant,
            &format!("member:{member_id}"),
            ExpectedVersion::Exact(member.version),
            &[Event::MemberAppPropertiesChanged(MemberAppPropertiesChanged {
                member_id: member_id.clone(),
                changes,
            })],
            &context,
        )?;
        members::member(tx.db(), &tenant, &member_id)?.ok_or_else(not_found)
    })
}

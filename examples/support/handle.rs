//! What the example application does with one event of rollcall's feed,
//! shared by `app` (which tails the feed) and `receiver` (which gets the
//! same events as webhooks).

// serde_json's `value["key"]` answers Null for a missing key: it never
// panics, which is what the lint guards against.
#![allow(clippy::indexing_slicing)]

use serde_json::Value;

/// What the application does for one event: one line saying so.
pub fn handle(event: &Value) -> Option<String> {
    let member = &event["data"]["member"];
    let change = &event["data"]["change"];
    let who = member["user_name"].as_str().unwrap_or("a member");
    let id = member["member_id"].as_str().unwrap_or("?");
    Some(match event["type"].as_str()? {
        "member.joined" => {
            let email = member["properties"]["email"].as_str().unwrap_or(who);
            format!("welcome email to {email}")
        }
        "member.disabled" => format!("revoke sessions of {who} ({id})"),
        "member.enabled" => format!("allow sign-in again for {who} ({id})"),
        "member.roles_changed" => {
            format!(
                "role changed for {who}: added {} removed {}",
                change["added"], change["removed"]
            )
        }
        "member.updated" => format!("profile of {who} updated: {}", change["properties"]),
        "member.left" => format!(
            "soft-delete {who} ({id}); restorable until {}",
            change["grace_until"].as_str().unwrap_or("?")
        ),
        "member.restored" => format!("restore {who} ({id})"),
        "member.purged" => format!("erase what we hold of member {id}"),
        "sync.completed" => format!("synchronize {} finished", event["data"]["run_id"]),
        "sync.held" => format!("synchronize {} is held for an admin", event["data"]["run_id"]),
        other => format!("ignoring {other}"),
    })
}

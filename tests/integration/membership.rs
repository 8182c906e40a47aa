//! Group PATCHes that add and remove members by id are applied one id at a
//! time against the membership table (`patch::membership_patch`), never
//! reading the whole member list. These tests hold that path to the
//! whole-list one: the same requests must give the same answers, members,
//! versions and events.

use serde_json::{Value, json};

use std::sync::atomic::Ordering;

use rollcall::scim::resources::GROUP_PATCHES_BY_ID;

use crate::scim::{Scim, assert_error};
use crate::util::TestServer;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// An operation only the whole-list path can apply (its filter is not
/// `value eq "id"`), which matches no member: added to a request, it sends
/// the request down the whole-list path without changing what it does.
fn whole_list_trigger() -> Value {
    json!({"op": "remove", "path": "members[value eq \"nobody\" and type eq \"User\"]"})
}

/// A small deterministic generator (no seed file, the same cases each run).
struct Cases(u64);

impl Cases {
    fn below(&mut self, bound: usize) -> usize {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap() % bound
    }
}

struct Group {
    id: String,
    path: String,
}

async fn group(scim: &Scim<'_>, name: &str, members: &[&str]) -> Group {
    let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
    let created = scim.post("/Groups", json!({"displayName": name, "members": members})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    Group { path: format!("/Groups/{id}"), id }
}

/// Members (sorted ids), version and the group's events so far (type and
/// payload).
async fn state(scim: &Scim<'_>, group: &Group) -> (Vec<String>, Value, Vec<Value>) {
    let body = scim.get(&group.path).await.body;
    let mut members: Vec<String> = body["members"]
        .as_array()
        .map(|members| members.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    members.sort();
    let tenant = crate::scim::tenant_id(scim.server, "acme").await;
    let events = scim
        .server
        .store
        .log()
        .read_stream(&tenant, &format!("group:{}", group.id))
        .unwrap()
        .iter()
        .map(|event| {
            let payload: Value = serde_json::from_str(&event.payload).unwrap();
            json!({"type": event.event_type, "payload": payload})
        })
        .collect();
    (members, body["meta"]["version"].clone(), events)
}

async fn patch(scim: &Scim<'_>, group: &Group, operations: Vec<Value>) -> crate::scim::Answer {
    let body = json!({"schemas": [PATCH_OP], "Operations": operations});
    scim.send(reqwest::Method::PATCH, &group.path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_changes_by_id_match_the_whole_list_path() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let mut pool = Vec::new();
    for name in ["m-1", "m-2", "m-3", "m-4"] {
        pool.push(scim.create_user(name).await["id"].as_str().unwrap().to_owned());
    }
    // Unknown ids are kept as references; one claims to be a group.
    pool.push("ext-ref-user".to_owned());
    pool.push("ext-ref-group".to_owned());
    let mut cases = Cases(7);
    let mut by_id_cases = 0;
    for case in 0..60 {
        let initial: Vec<&str> =
            pool.iter().filter(|_| cases.below(2) == 0).map(String::as_str).collect();
        let by_id = group(&scim, &format!("by-id-{case}"), &initial).await;
        let whole = group(&scim, &format!("whole-{case}"), &initial).await;
        let mut operations = Vec::new();
        for _ in 0..1 + cases.below(5) {
            let id = pool[cases.below(pool.len())].clone();
            let kind = if id == "ext-ref-group" { "Group" } else { "User" };
            let core = "urn:ietf:params:scim:schemas:core:2.0:Group";
            operations.push(match cases.below(17) {
                0 | 1 => json!({"op": "add", "path": "members", "value": [{"value": id, "type": kind}]}),
                2 => {
                    let other = &pool[cases.below(pool.len())];
                    json!({"op": "Add", "path": "members", "value": [{"value": id}, {"value": other}, {"value": id}]})
                }
                3 | 4 => json!({"op": "remove", "path": format!("members[value eq \"{id}\"]")}),
                5 => json!({"op": "Remove", "path": "members", "value": [{"value": id}]}),
                6 => json!({"op": "replace", "path": "displayName", "value": format!("renamed-{case}")}),
                // The group itself as a member: refused unless removed again.
                7 => json!({"op": "add", "path": "members", "value": [{"value": "SELF"}]}),
                8 => json!({"op": "remove", "path": "members[value eq \"SELF\"]"}),
                // A member without an id, or with a number for one: refused.
                9 => json!({"op": "add", "path": "members", "value": [{"type": "User"}]}),
                10 => json!({"op": "add", "path": "members", "value": [{"value": 42}]}),
                // An empty value clears the members.
                11 => json!({"op": "add", "path": "members", "value": null}),
                12 => json!({"op": "add", "path": "members", "value": ""}),
                // Members through the core schema's URN, as a path or a key.
                13 => json!({"op": "add", "path": format!("{core}:members"), "value": [{"value": id}]}),
                14 => json!({"op": "add", "value": {core: {"members": [{"value": id}]}}}),
                // Read-only: refused, whatever comes after it.
                15 => json!({"op": "replace", "path": "id", "value": "other"}),
                _ => json!({"op": "add", "path": "members", "value": []}),
            });
        }
        let for_group = |group: &Group, operations: &[Value]| -> Vec<Value> {
            let text = serde_json::to_string(operations).unwrap().replace("SELF", &group.id);
            let mut operations: Vec<Value> = serde_json::from_str(&text).unwrap();
            for operation in &mut operations {
                if let Some(name) =
                    operation["value"].as_str().filter(|name| name.starts_with("renamed"))
                {
                    // Each group gets its own name: names are unique.
                    operation["value"] = json!(format!("{name}-{}", group.id));
                }
            }
            operations
        };
        let before = (state(&scim, &by_id).await, state(&scim, &whole).await);
        let by_id_body =
            json!({"schemas": [PATCH_OP], "Operations": for_group(&by_id, &operations)});
        let classified = rollcall::scim::patch::membership_patch(&by_id_body);
        let mut with_trigger = for_group(&whole, &operations);
        with_trigger.push(whole_list_trigger());
        let whole_body = json!({"schemas": [PATCH_OP], "Operations": with_trigger});
        assert!(
            matches!(rollcall::scim::patch::membership_patch(&whole_body), Ok(None) | Err(_)),
            "the trigger sends a request down the whole-list path"
        );
        if matches!(classified, Ok(Some(_))) {
            by_id_cases += 1;
        }
        let by_id_before = GROUP_PATCHES_BY_ID.load(Ordering::Relaxed);
        let answer_by_id = patch(&scim, &by_id, for_group(&by_id, &operations)).await;
        let adds_itself = serde_json::to_string(&operations).unwrap().contains("SELF");
        if matches!(classified, Ok(Some(_))) && answer_by_id.status == 200 && !adds_itself {
            // Other tests may take the path too; this request surely did.
            assert!(GROUP_PATCHES_BY_ID.load(Ordering::Relaxed) > by_id_before, "{operations:?}");
        }
        // Last, so errors name the same operations on both paths.
        let mut whole_ops = for_group(&whole, &operations);
        whole_ops.push(whole_list_trigger());
        let answer_whole = patch(&scim, &whole, whole_ops).await;
        let context = format!("case {case}: {operations:?}");
        assert_eq!(answer_by_id.status, answer_whole.status, "{context}\n{}", answer_by_id.body);
        for field in ["scimType", "detail"] {
            let detail =
                |body: &Value, group: &Group| body[field].to_string().replace(&group.id, "G");
            assert_eq!(
                detail(&answer_by_id.body, &by_id),
                detail(&answer_whole.body, &whole),
                "{context}"
            );
        }
        let after = (state(&scim, &by_id).await, state(&scim, &whole).await);
        assert_eq!(after.0.0, after.1.0, "members, {context}");
        assert_eq!(after.0.1, after.1.1, "version, {context}");
        let new_events =
            |state: &(Vec<String>, Value, Vec<Value>), before: usize, group: &Group| {
                state.2[before..]
                    .iter()
                    .map(|event| {
                        let mut event = event.clone();
                        // The request as recorded differs by the trigger.
                        event["payload"].as_object_mut().unwrap().remove("change");
                        event
                            .to_string()
                            .replace(&group.id, "G")
                            .replace("by-id-", "")
                            .replace("whole-", "")
                    })
                    .collect::<Vec<_>>()
            };
        assert_eq!(
            new_events(&after.0, before.0.2.len(), &by_id),
            new_events(&after.1, before.1.2.len(), &whole),
            "events, {context}"
        );
        if answer_by_id.status != 200 {
            assert_eq!(before.0, after.0, "a refused PATCH writes nothing, {context}");
        }
    }
    assert!(by_id_cases >= 10, "only {by_id_cases} of 60 requests went by id");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_changes_by_id_net_out_within_one_request() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let kept = scim.create_user("kept").await["id"].as_str().unwrap().to_owned();
    let passing = scim.create_user("passing").await["id"].as_str().unwrap().to_owned();
    let staff = group(&scim, "Staff", &[&kept]).await;
    let (_, version, events) = state(&scim, &staff).await;

    // Removed and added back, added and removed again: nothing happened.
    let answer = patch(
        &scim,
        &staff,
        vec![
            json!({"op": "remove", "path": format!("members[value eq \"{kept}\"]")}),
            json!({"op": "add", "path": "members", "value": [{"value": kept}]}),
            json!({"op": "add", "path": "members", "value": [{"value": passing}]}),
            json!({"op": "Remove", "path": "members", "value": [{"value": passing}]}),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(state(&scim, &staff).await, (vec![kept.clone()], version, events.clone()));

    // A rename that collides is refused before any member changes.
    group(&scim, "Taken", &[]).await;
    let answer = patch(
        &scim,
        &staff,
        vec![
            json!({"op": "add", "path": "members", "value": [{"value": passing}]}),
            json!({"op": "replace", "path": "displayName", "value": "taken"}),
        ],
    )
    .await;
    assert_error(&answer, 409, Some("uniqueness"));
    assert_eq!(state(&scim, &staff).await.0, vec![kept.clone()]);

    // An error names the operation by its place in the request.
    let answer = patch(
        &scim,
        &staff,
        vec![
            json!({"op": "replace", "path": "displayName", "value": "Staff 2"}),
            json!({"op": "add", "path": "members", "value": [{"value": 42}]}),
        ],
    )
    .await;
    assert_error(&answer, 400, Some("invalidValue"));
    assert!(answer.body["detail"].as_str().unwrap().contains("Operations[1]"), "{}", answer.body);
    assert_eq!(state(&scim, &staff).await.2, events);
    server.stop().await.unwrap();
}
